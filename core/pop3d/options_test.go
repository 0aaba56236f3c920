package pop3d

import (
	"testing"

	"github.com/sluice-mail/sluice/core/config"
)

// A ReadTimeout of 0 is no limit (Options' zero values are none), not a
// deadline that has passed already.
func TestZeroReadTimeoutIsNone(t *testing.T) {
	e := newServer(t, func(c *config.Config) { c.POP3.ReadTimeout = 0 })
	c := e.loggedIn(t, alice, alicePass)
	c.cmd("STAT", "+OK")
	c.cmd("QUIT", "+OK")
}
