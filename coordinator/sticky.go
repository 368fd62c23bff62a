package coordinator

import "github.com/shardscrape/shardscrape/shardring"

// placeSticky gives each of keys (asg's keys, in asg's order) a member of
// asg's ring, as an index into asg.Ring().Members(), moving as few keys
// away from their current members as asg's load bounds allow. current[i] is
// key i's current member, or -1 for none (new, or its owner left the ring).
//
// The ring's bounded assignment alone depends only on the members and the
// keys, so after a join the tighter bounds also shift keys between old
// members wherever they cascade differently: at a few hundred keys that
// moved up to 1.27 × the joiner's share. Here each member has a target
// load. While some member holds less than half of what the ring places on
// it (a joiner, a restarted worker), the target is the ring's load, so the
// balance is the ring's: the old members shed what they hold above their
// new loads, and the starved member takes it. Otherwise the target is what
// the member holds, up to its bound (at least the ring's load), so a leave
// or a discovery change moves no stayer's keys. A key stays with its current
// member while that member is under its target (the keys the ring also
// places there first, then its others, in order), and only the rest go to
// their ring placement or, when that member is full, to the next member
// clockwise with room. (Keeping keys up to the bound always starves a joiner
// once members hold hundreds of keys each: the bound is far above every old
// load, and at 155,000 keys on 200 members a joiner got 16 keys of its 771.
// Targeting the ring's load always moves a few stayers' keys whenever its
// loads shift: 14–18 at 150,000 keys when 150 were added.)
func placeSticky(asg *shardring.Assignment, keys []uint64, current []int32) []int32 {
	members := asg.Ring().Members()
	index := make(map[string]int32, len(members))
	target := make([]int, len(members))
	for i := range keys {
		target[asg.OwnerIndex(i)]++
	}
	held := make([]int, len(members))
	for _, c := range current {
		if c >= 0 {
			held[c]++
		}
	}
	rebalance := false
	for i := range members {
		// Short by more than half its ring load, and by more than one
		// key: a few keys of churn on a member with one or two must not
		// rebalance everyone.
		rebalance = rebalance || target[i]-held[i] > max(1, target[i]/2)
	}
	for i, m := range members {
		index[m.ID] = int32(i)
		if !rebalance {
			// No member is starved: everyone keeps what it holds up to its
			// bound, so a leave or a discovery change moves no stayer's keys.
			target[i] = max(target[i], min(held[i], asg.Capacity(m.ID)))
		}
	}
	load := make([]int, len(members))
	placed := make([]int32, len(keys))
	out := make([]int32, len(keys))
	for i := range keys {
		placed[i] = int32(asg.OwnerIndex(i))
		out[i] = -1
		if current[i] == placed[i] {
			out[i] = placed[i]
			load[placed[i]]++
		}
	}
	for i, cur := range current {
		if out[i] < 0 && cur >= 0 && load[cur] < target[cur] {
			out[i] = cur
			load[cur]++
		}
	}
	for i, key := range keys {
		if out[i] >= 0 {
			continue
		}
		m := placed[i]
		if load[m] >= target[m] {
			// The targets add up to at least the key count and no member is
			// above its target, so one has room.
			for _, id := range asg.Ring().Owners(key, len(members)) {
				if o := index[id]; load[o] < target[o] {
					m = o
					break
				}
			}
		}
		out[i] = m
		load[m]++
	}
	return out
}
