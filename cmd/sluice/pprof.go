package main

import (
	"fmt"
	"net"
)

// pprofEnv names the loopback address on which a binary built with the
// pprof tag ('make build TAGS=pprof') serves net/http/pprof, for profiling
// in development. A production build does not link net/http/pprof at all,
// so the variable cannot turn it on there by accident.
const pprofEnv = "SLUICE_PPROF"

// pprofAddr checks that addr, the value of pprofEnv, is a loopback address
// with a port: profiles show memory and the profiler costs CPU, so they are
// never served to the network.
func pprofAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s=%s: %w", pprofEnv, addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%s=%s: profiling is served on a loopback address only", pprofEnv, addr)
	}
	return nil
}
