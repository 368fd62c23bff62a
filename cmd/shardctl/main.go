// Command shardctl is the operator's CLI over the coordinator's
// AdminService: list workers and targets, locate a target, show the ring,
// drain, pin, exclude, pause, and preview rebalances. See README.md and
// `shardctl --help`.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
