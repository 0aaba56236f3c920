package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Errors returned by Authenticator.Authenticate. The first two are
// deliberately not distinguished from each other in replies.
var (
	// ErrInvalidCredentials is returned for an unknown user and for a
	// wrong password alike.
	ErrInvalidCredentials = errors.New("auth: invalid credentials")
	// ErrThrottled is returned when too many attempts failed recently.
	ErrThrottled = errors.New("auth: too many failed attempts")
	// ErrIdentity is returned when a SASL authorisation identity differs
	// from the authenticated user (see maddy CVE-2023-27582).
	ErrIdentity = errors.New("auth: authorization identity differs from user")
)

// ErrNoSuchUser is what a Users implementation returns for an unknown
// user. Authenticate turns it into ErrInvalidCredentials.
var ErrNoSuchUser = errors.New("auth: no such user")

// ErrDisabled is what a Users implementation returns, with the user's
// canonical name and hash, for a user whose logins are disabled.
// Authenticate still verifies the password, so that a disabled user costs
// the same time as any other, and then fails with ErrInvalidCredentials:
// the reply does not reveal that the account is disabled.
var ErrDisabled = errors.New("auth: user disabled")

// Users looks up password hashes. core/store implements it.
type Users interface {
	// PasswordHash returns the canonical name of the user and the PHC
	// hash of their password, or ErrNoSuchUser; or both with ErrDisabled.
	PasswordHash(ctx context.Context, username string) (canonical, hash string, err error)
}

// Authenticator checks usernames and passwords.
type Authenticator struct {
	Users    Users
	Throttle *Throttle // nil means no throttling
}

// Authenticate checks password for username, on behalf of a client at ip,
// and returns the user's canonical name. Unknown users and wrong passwords
// take the same time and give the same error.
func (a *Authenticator) Authenticate(ctx context.Context, ip netip.Addr, username, password string) (string, error) {
	if !a.Throttle.Allowed(ip, username) {
		return "", ErrThrottled
	}
	canonical, hash, err := a.Users.PasswordHash(ctx, username)
	disabled := false
	switch {
	case errors.Is(err, ErrDisabled):
		disabled = true
	case errors.Is(err, ErrNoSuchUser):
		hash, canonical = dummyHash(), ""
	case err != nil:
		return "", fmt.Errorf("auth: looking up %q: %w", username, err)
	}
	ok, err := VerifyPassword(hash, password)
	if err != nil {
		return "", fmt.Errorf("auth: stored hash of %q: %w", username, err)
	}
	if !ok || canonical == "" || disabled {
		a.Throttle.Failed(ip, username)
		return "", ErrInvalidCredentials
	}
	a.Throttle.Succeeded(ip, username)
	return canonical, nil
}
