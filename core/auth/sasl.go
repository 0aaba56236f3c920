package auth

import (
	"errors"

	"github.com/emersion/go-sasl"
)

// SASL mechanism names offered by Sluice.
const (
	MechPlain = sasl.Plain // RFC 4616
	MechLogin = "LOGIN"    // draft-murchison-sasl-login
)

// CheckFunc checks a username and password; it returns nil when they are
// right. The SASL servers below call it once the client has sent both.
type CheckFunc func(username, password string) error

// NewPlainServer returns a SASL PLAIN server (RFC 4616). The authorisation
// identity, when the client sends one, must equal the username: Sluice has
// no proxy authorisation, and accepting a different identity would let one
// user act as another.
func NewPlainServer(check CheckFunc) sasl.Server {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return ErrIdentity
		}
		return check(username, password)
	})
}

// errLoginState is returned when a LOGIN exchange goes on after it ended.
var errLoginState = errors.New("auth: unexpected LOGIN response")

// loginServer implements the LOGIN mechanism, which many clients still use:
// the server prompts "Username:" and "Password:" and the client answers
// each. A username sent as the initial response skips the first prompt.
type loginServer struct {
	check    CheckFunc
	step     int
	username string
}

// NewLoginServer returns a SASL LOGIN server.
func NewLoginServer(check CheckFunc) sasl.Server {
	return &loginServer{check: check}
}

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.step {
	case 0:
		if len(response) > 0 {
			s.username, s.step = string(response), 2
			return []byte("Password:"), false, nil
		}
		s.step = 1
		return []byte("Username:"), false, nil
	case 1:
		s.username, s.step = string(response), 2
		return []byte("Password:"), false, nil
	case 2:
		s.step = 3
		return nil, true, s.check(s.username, string(response))
	}
	return nil, true, errLoginState
}

var _ sasl.Server = (*loginServer)(nil)
