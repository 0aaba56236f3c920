//go:build pprof

package main

import (
	"log/slog"
	"net/http"
	_ "net/http/pprof"
)

// startPprof serves net/http/pprof on addr, a loopback address.
func startPprof(addr string, log *slog.Logger) error {
	if err := pprofAddr(addr); err != nil {
		return err
	}
	log.Warn("serving pprof: a build for profiling, not for production", "addr", addr)
	go func() { log.Warn("pprof stopped", "err", http.ListenAndServe(addr, nil)) }()
	return nil
}
