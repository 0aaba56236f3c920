package store

import (
	"bytes"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestResetToken: a token resets the password once; checking it does not
// spend it; a second use, an expired token, a token from before a password
// change, an unknown token and the token of a removed user all fail the
// same way; the database keeps only the token's hash.
func TestResetToken(t *testing.T) {
	s := withUsers(t)
	now := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
	ttl := 30 * time.Minute

	token, err := s.CreateResetToken("Alice@Example.test", ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(token); err != nil || len(raw) < 16 {
		t.Fatalf("token %q: %d random bytes (%v), want at least 16 (128 bits)", token, len(raw), err)
	}
	if u, err := s.CheckResetToken(token, now.Add(time.Minute)); err != nil || u.Address != "alice@example.test" {
		t.Fatalf("CheckResetToken = %+v, %v; want alice", u, err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bResets).ForEach(func(k, v []byte) error {
			if bytes.Contains(k, []byte(token)) || bytes.Contains(v, []byte(token)) {
				t.Errorf("the database holds the token itself")
			}
			return nil
		})
	})
	if _, err := s.ResetPassword(token, "new-hash", now.Add(2*time.Minute)); err != nil {
		t.Fatalf("ResetPassword: %v", err)
	}
	if u, _ := s.User("alice@example.test"); u.PasswordHash != "new-hash" {
		t.Errorf("password hash after the reset = %q", u.PasswordHash)
	}
	bad := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrBadResetToken) {
			t.Errorf("%s: %v, want ErrBadResetToken", what, err)
		}
	}
	_, err = s.ResetPassword(token, "again", now.Add(3*time.Minute))
	bad("a second use", err)
	_, err = s.CheckResetToken(token, now.Add(3*time.Minute))
	bad("checking a spent token", err)

	expired, _ := s.CreateResetToken("bob@example.test", ttl, now)
	_, err = s.CheckResetToken(expired, now.Add(ttl))
	bad("checking at expiry", err)
	_, err = s.ResetPassword(expired, "late", now.Add(ttl))
	bad("using at expiry", err)
	if u, _ := s.User("bob@example.test"); u.PasswordHash != "x" {
		t.Errorf("an expired token changed the password to %q", u.PasswordHash)
	}

	// A password set since the token was made makes it worthless, and
	// a failed try spends it: setting the old password back does not
	// bring it back.
	outdated, _ := s.CreateResetToken("bob@example.test", ttl, now)
	if err := s.SetPasswordHash("bob@example.test", "changed"); err != nil {
		t.Fatal(err)
	}
	_, err = s.ResetPassword(outdated, "mine", now)
	bad("a token from before a password change", err)
	if err := s.SetPasswordHash("bob@example.test", "x"); err != nil {
		t.Fatal(err)
	}
	_, err = s.ResetPassword(outdated, "mine", now)
	bad("a token tried once already", err)

	_, err = s.ResetPassword("not-a-token", "mine", now)
	bad("an unknown token", err)

	gone, _ := s.CreateResetToken("bob@example.test", ttl, now)
	if err := s.RemoveUser("bob@example.test"); err != nil {
		t.Fatal(err)
	}
	_, err = s.ResetPassword(gone, "mine", now)
	bad("the token of a removed user", err)

	if _, err := s.CreateResetToken("nobody@example.test", ttl, now); !errors.Is(err, ErrNotFound) {
		t.Errorf("a token for an unknown user: %v, want ErrNotFound", err)
	}
	if _, err := s.CreateResetToken("alice@example.test", 0, now); !errors.Is(err, ErrInvalid) {
		t.Errorf("a token without a lifetime: %v, want ErrInvalid", err)
	}
}

// TestResetTokensSwept: making a token deletes the expired ones, so that
// tokens nobody used do not pile up.
func TestResetTokensSwept(t *testing.T) {
	s := withUsers(t)
	now := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
	for range 5 {
		if _, err := s.CreateResetToken("alice@example.test", time.Minute, now); err != nil {
			t.Fatal(err)
		}
	}
	live, err := s.CreateResetToken("alice@example.test", time.Hour, now.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bResets).Stats().KeyN; return nil })
	if n != 1 {
		t.Errorf("%d tokens kept, want only the live one", n)
	}
	if _, err := s.CheckResetToken(live, now.Add(3*time.Minute)); err != nil {
		t.Errorf("the live token: %v", err)
	}
}
