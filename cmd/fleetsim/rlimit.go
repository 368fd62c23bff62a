package main

import (
	"log/slog"
	"syscall"
)

// raiseOpenFiles makes room for one kept-alive scrape connection per
// target: Go raises the soft descriptor limit to the hard one at start; past
// that, raising the hard limit needs privilege, and without it the fleet
// still runs, with a warning, its listeners pausing on EMFILE.
func raiseOpenFiles(targets int, logger *slog.Logger) {
	want := uint64(targets) + uint64(targets)/5 + 1024
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= want {
		return
	}
	nl := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err != nil {
		logger.Warn("Open file limit is below one connection per target; scrapers keeping connections alive may exhaust it",
			"limit", lim.Cur, "targets", targets, "err", err)
		return
	}
	logger.Info("Raised the open file limit", "from", lim.Cur, "to", want)
}
