package store

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Password reset tokens, for the password recovery of the web side and
// 'sluice user reset-link'.
//
// A token is 256 random bits, given out once (in a link) and kept only as
// its SHA-256, so that a copy of the database gives no working token. It
// is single-use (spending it deletes it, whatever the outcome), expires,
// and is bound to the password the account had when the token was made:
// a password set since, by any means, makes it worthless. Every way a
// token can fail gives the same error, ErrBadResetToken, so that a caller
// cannot tell an unknown token from an expired or spent one.

// ErrBadResetToken is what an unknown, expired, spent or outdated reset
// token gets.
var ErrBadResetToken = errors.New("store: the reset link is not valid (unknown, used, expired, or the password changed since)")

// resetRecord is what the store keeps of a reset token.
type resetRecord struct {
	User    uint64    `json:"user"`
	Expires time.Time `json:"expires"`
	// Password is the SHA-256 of the account's password hash when the
	// token was made.
	Password []byte `json:"password"`
}

func tokenKey(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func passwordStamp(u User) []byte {
	h := sha256.Sum256([]byte(u.PasswordHash))
	return h[:]
}

// CreateResetToken makes a reset token for the user at addr, valid for
// ttl, and returns it: the only copy, to go into the link. Tokens past
// their expiry are deleted on the way.
func (s *Store) CreateResetToken(addr string, ttl time.Duration, now time.Time) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("%w: reset token lifetime %v", ErrInvalid, ttl)
	}
	a, err := s.canonical(addr, false)
	if err != nil {
		return "", err
	}
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	token := base64.RawURLEncoding.EncodeToString(b[:])
	err = s.db.Update(func(tx *bolt.Tx) error {
		var u User
		if err := getJSON(tx.Bucket(bUsers), []byte(a.String()), &u); err != nil {
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%w: user %s", ErrNotFound, a)
			}
			return err
		}
		resets := tx.Bucket(bResets)
		var stale [][]byte
		err := resets.ForEach(func(k, v []byte) error {
			var r resetRecord
			if getJSON(resets, k, &r) != nil || !now.Before(r.Expires) {
				stale = append(stale, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := resets.Delete(k); err != nil {
				return err
			}
		}
		return putJSON(resets, tokenKey(token), resetRecord{User: u.ID, Expires: now.Add(ttl), Password: passwordStamp(u)})
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// checkReset returns the user a token is good for, in tx, or
// ErrBadResetToken.
func checkReset(tx *bolt.Tx, token string, now time.Time) (User, error) {
	var r resetRecord
	if err := getJSON(tx.Bucket(bResets), tokenKey(token), &r); err != nil {
		if errors.Is(err, ErrNotFound) {
			return User{}, ErrBadResetToken
		}
		return User{}, err
	}
	if !now.Before(r.Expires) {
		return User{}, ErrBadResetToken
	}
	u, err := userByID(tx, r.User)
	if errors.Is(err, ErrNotFound) {
		return User{}, ErrBadResetToken
	}
	if err != nil {
		return User{}, err
	}
	if subtle.ConstantTimeCompare(passwordStamp(u), r.Password) != 1 {
		return User{}, ErrBadResetToken
	}
	return u, nil
}

// CheckResetToken returns the user a token would reset the password of,
// without spending it (to show the form for a new password), or
// ErrBadResetToken.
func (s *Store) CheckResetToken(token string, now time.Time) (User, error) {
	var u User
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		u, err = checkReset(tx, token, now)
		return err
	})
	return u, err
}

// ResetPassword spends a token: in one transaction it is deleted and,
// when it was good, the user's password hash becomes hash. It returns the
// user as it was before, or ErrBadResetToken (the token is deleted then
// too: a token is tried once).
func (s *Store) ResetPassword(token, hash string, now time.Time) (User, error) {
	if hash == "" {
		return User{}, fmt.Errorf("%w: no password", ErrInvalid)
	}
	var u User
	var bad error
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		u, err = checkReset(tx, token, now)
		if delErr := tx.Bucket(bResets).Delete(tokenKey(token)); delErr != nil {
			return delErr
		}
		if errors.Is(err, ErrBadResetToken) {
			bad = err // commit the delete all the same
			return nil
		}
		if err != nil {
			return err
		}
		changed := u
		changed.PasswordHash = hash
		return putJSON(tx.Bucket(bUsers), []byte(u.Address), changed)
	})
	if err != nil {
		return User{}, err
	}
	if bad != nil {
		return User{}, bad
	}
	return u, nil
}
