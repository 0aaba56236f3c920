package main

import "testing"

func TestPprofAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1:6060", "[::1]:6060", "localhost:6060", "127.0.0.2:0"} {
		if err := pprofAddr(a); err != nil {
			t.Errorf("pprofAddr(%q) = %v, want nil", a, err)
		}
	}
	for _, a := range []string{"0.0.0.0:6060", ":6060", "192.0.2.1:6060", "example.test:6060", "127.0.0.1"} {
		if err := pprofAddr(a); err == nil {
			t.Errorf("pprofAddr(%q) = nil, want an error", a)
		}
	}
}
