// Package auth checks passwords and throttles those who guess them.
//
// Passwords are hashed with argon2id (RFC 9106) and stored in the PHC string
// format: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>, with unpadded
// base64. The parameters are the OWASP minimum for argon2id (19 MiB, two
// passes, one lane); they are kept in each hash, so they can be raised later
// without invalidating stored passwords. At most one hash per CPU is
// computed at a time, which bounds memory at 19 MiB per CPU whatever the
// number of logins in flight.
package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
)

// The argon2id parameters for new hashes.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonKeyLen    = 32
	argonSaltLen   = 16
	// Bounds on the parameters of hashes we verify, so that a tampered
	// hash cannot make us allocate gigabytes.
	maxMemoryKiB = 1 << 20
	maxTime      = 16
)

// MaxPasswordLength is the longest password accepted, in bytes.
const MaxPasswordLength = 1024

// ErrBadHash is returned for a stored hash that cannot be parsed.
var ErrBadHash = errors.New("auth: malformed password hash")

var hashSlots = make(chan struct{}, runtime.NumCPU())

func argonKey(password, salt []byte, t, m uint32, p uint8, n uint32) []byte {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	return argon2.IDKey(password, salt, t, m, p, n)
}

// HashPassword returns the PHC string of an argon2id hash of password.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("auth: empty password")
	}
	if len(password) > MaxPasswordLength {
		return "", fmt.Errorf("auth: password longer than %d bytes", MaxPasswordLength)
	}
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: %w", err)
	}
	key := argonKey([]byte(password), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemoryKiB, argonTime, argonThreads, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// VerifyPassword reports whether password matches the PHC hash, in time
// that does not depend on where they differ.
func VerifyPassword(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, ErrBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, ErrBadHash
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false, ErrBadHash
	}
	if m == 0 || m > maxMemoryKiB || t == 0 || t > maxTime || p == 0 {
		return false, ErrBadHash
	}
	enc := base64.RawStdEncoding
	salt, err := enc.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return false, ErrBadHash
	}
	want, err := enc.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 64 {
		return false, ErrBadHash
	}
	if len(password) > MaxPasswordLength {
		return false, nil
	}
	got := argonKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// dummyHash is verified against when a user does not exist, so that an
// unknown user costs the same time as a wrong password.
var dummyHash = sync.OnceValue(func() string {
	h, err := HashPassword("sluice-dummy-password-for-timing")
	if err != nil {
		panic(err)
	}
	return h
})
