//go:build !pprof

package main

import "log/slog"

// startPprof only says that this binary, a production build, has no
// profiler: the variable is ignored.
func startPprof(addr string, log *slog.Logger) error {
	log.Warn(pprofEnv+" is set, but this sluice was built without profiling (make build TAGS=pprof): ignored", "addr", addr)
	return nil
}
