package main

import (
	"fmt"
	"strconv"
	"strings"

	shardscrapev1 "github.com/shardscrape/shardscrape/proto/shardscrape/v1"
)

// targetSyntax is the help text for a target argument.
const targetSyntax = `a target id as 16 hex digits, with or without 0x (as "targets" and "locate" print it), or job/address: the job name and the discovered __address__, split at the last "/" (e.g. node/10.0.0.1:9100)`

// parseTarget reads a target argument: a 16-hex-digit id, with or without
// 0x, or job/address split at the last "/" (a job name may contain "/", an
// address does not).
func parseTarget(s string) (*shardscrapev1.TargetRef, error) {
	hex := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if len(hex) == 16 && !strings.Contains(s, "/") {
		id, err := strconv.ParseUint(hex, 16, 64)
		if err == nil {
			return &shardscrapev1.TargetRef{Ref: &shardscrapev1.TargetRef_Id{Id: id}}, nil
		}
	}
	i := strings.LastIndex(s, "/")
	if i <= 0 || i == len(s)-1 {
		return nil, fmt.Errorf("target %q: want %s", s, targetSyntax)
	}
	return &shardscrapev1.TargetRef{Ref: &shardscrapev1.TargetRef_JobAddress{JobAddress: &shardscrapev1.JobAddress{
		Job: s[:i], Address: s[i+1:],
	}}}, nil
}

// formatTargetID prints an id the way parseTarget reads it.
func formatTargetID(id uint64) string {
	return fmt.Sprintf("%016x", id)
}

// parseWorkerSpec reads a --add value: id[:zone[:capacity]].
func parseWorkerSpec(s string) (*shardscrapev1.WorkerSpec, error) {
	parts := strings.Split(s, ":")
	if len(parts) > 3 || parts[0] == "" {
		return nil, fmt.Errorf("worker %q: want id[:zone[:capacity]]", s)
	}
	w := &shardscrapev1.WorkerSpec{Id: parts[0]}
	if len(parts) > 1 {
		w.Zone = parts[1]
	}
	if len(parts) > 2 {
		c, err := strconv.ParseFloat(parts[2], 64)
		// Written so that NaN, which compares false with everything, fails.
		if err != nil || !(c >= 0 && c <= 1000) {
			return nil, fmt.Errorf("worker %q: capacity %q: want a number in (0, 1000] (0 means 1)", s, parts[2])
		}
		w.Capacity = c
	}
	return w, nil
}
