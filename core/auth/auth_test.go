package auth

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestHashVerify(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("HashPassword = %q, not the expected PHC form", h)
	}
	h2, _ := HashPassword("correct horse")
	if h == h2 {
		t.Error("two hashes of one password are equal: salt not random")
	}
	for pw, want := range map[string]bool{"correct horse": true, "correct horse ": false, "": false, "Correct horse": false} {
		if ok, err := VerifyPassword(h, pw); err != nil || ok != want {
			t.Errorf("VerifyPassword(h, %q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	for _, bad := range []string{"", "plain", "$argon2i$v=19$m=1,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=4294967295,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=1024,t=100,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=1024,t=1,p=1$!!$AAAAAAAAAAAAAAAAAAAAAA"} {
		if _, err := VerifyPassword(bad, "x"); !errors.Is(err, ErrBadHash) {
			t.Errorf("VerifyPassword(%q) error = %v, want ErrBadHash", bad, err)
		}
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("HashPassword(\"\") = nil error")
	}
	if _, err := HashPassword(strings.Repeat("x", MaxPasswordLength+1)); err == nil {
		t.Error("HashPassword(too long) = nil error")
	}
}

func TestThrottle(t *testing.T) {
	now := time.Unix(1000, 0)
	th := &Throttle{MaxPerIP: 3, MaxPerUser: 5, Window: time.Minute, Now: func() time.Time { return now }}
	ip := netip.MustParseAddr("192.0.2.1")
	for i := 0; i < 3; i++ {
		if !th.Allowed(ip, "a") {
			t.Fatalf("attempt %d refused", i)
		}
		th.Failed(ip, "a")
	}
	if th.Allowed(ip, "b") {
		t.Error("IP allowed after 3 failures")
	}
	if !th.Allowed(netip.MustParseAddr("192.0.2.2"), "b") {
		t.Error("other IP refused")
	}
	// IPv6 addresses in one /64 count together.
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:1")
	for i := 0; i < 3; i++ {
		th.Failed(v6a, "")
	}
	if th.Allowed(v6b, "") {
		t.Error("same /64 allowed after 3 failures")
	}
	// Per user, from many addresses.
	for i := 0; i < 5; i++ {
		th.Failed(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), "victim")
	}
	if th.Allowed(netip.MustParseAddr("203.0.113.9"), "victim") {
		t.Error("user allowed after 5 failures from different IPs")
	}
	now = now.Add(time.Minute)
	if !th.Allowed(ip, "victim") {
		t.Error("still refused after the window")
	}
}

type fakeUsers map[string]string

func (f fakeUsers) PasswordHash(_ context.Context, u string) (string, string, error) {
	h, ok := f[u]
	if !ok {
		return "", "", ErrNoSuchUser
	}
	return u, h, nil
}

func TestAuthenticator(t *testing.T) {
	// "pw" is far below the PasswordPolicy: the policy is for setting a
	// password, and an account that has a weak one still logs in with it.
	h, _ := HashPassword("pw")
	a := &Authenticator{Users: fakeUsers{"alice@example.test": h}, Throttle: &Throttle{MaxPerIP: 2, MaxPerUser: 10, Window: time.Minute}}
	ip := netip.MustParseAddr("192.0.2.1")
	ctx := context.Background()
	if u, err := a.Authenticate(ctx, ip, "alice@example.test", "pw"); err != nil || u != "alice@example.test" {
		t.Fatalf("Authenticate(right) = %q, %v", u, err)
	}
	_, errWrong := a.Authenticate(ctx, ip, "alice@example.test", "nope")
	_, errUnknown := a.Authenticate(ctx, ip, "bob@example.test", "pw")
	if !errors.Is(errWrong, ErrInvalidCredentials) || !errors.Is(errUnknown, ErrInvalidCredentials) {
		t.Errorf("wrong password = %v, unknown user = %v; want both ErrInvalidCredentials", errWrong, errUnknown)
	}
	if _, err := a.Authenticate(ctx, ip, "alice@example.test", "pw"); !errors.Is(err, ErrThrottled) {
		t.Errorf("third attempt after 2 failures = %v, want ErrThrottled", err)
	}
}

func TestPlainIdentity(t *testing.T) {
	var got string
	check := func(u, p string) error { got = u + ":" + p; return nil }
	tests := []struct {
		ir   string
		want error
	}{
		{"\x00alice\x00pw", nil},
		{"alice\x00alice\x00pw", nil},
		{"bob\x00alice\x00pw", ErrIdentity},
	}
	for _, tt := range tests {
		s := NewPlainServer(check)
		_, done, err := s.Next([]byte(tt.ir))
		if !done || !errors.Is(err, tt.want) {
			t.Errorf("PLAIN %q = done %v, %v; want %v", tt.ir, done, err, tt.want)
		}
	}
	if got != "alice:pw" {
		t.Errorf("check got %q", got)
	}
}

func TestLogin(t *testing.T) {
	var got string
	s := NewLoginServer(func(u, p string) error { got = u + ":" + p; return nil })
	if c, done, err := s.Next(nil); string(c) != "Username:" || done || err != nil {
		t.Fatalf("step 0 = %q %v %v", c, done, err)
	}
	if c, done, err := s.Next([]byte("alice")); string(c) != "Password:" || done || err != nil {
		t.Fatalf("step 1 = %q %v %v", c, done, err)
	}
	if _, done, err := s.Next([]byte("pw")); !done || err != nil || got != "alice:pw" {
		t.Fatalf("step 2 = %v %v, check got %q", done, err, got)
	}
	if _, _, err := s.Next([]byte("more")); err == nil {
		t.Error("response after the end accepted")
	}
	s = NewLoginServer(func(u, p string) error { got = u + ":" + p; return nil })
	if c, _, _ := s.Next([]byte("carol")); string(c) != "Password:" {
		t.Errorf("initial response: challenge %q", c)
	}
}

// Strangers who exhaust an account's failure budget from many addresses
// do not lock its owner out of an address they logged in from recently;
// elsewhere the account stays locked, and the owner's address keeps its
// own per-address limit.
func TestThrottleKnownClient(t *testing.T) {
	now := time.Unix(1000, 0)
	h, _ := HashPassword("pw")
	th := &Throttle{MaxPerIP: 3, MaxPerUser: 20, Window: 15 * time.Minute, KnownWindow: 24 * time.Hour, Now: func() time.Time { return now }}
	a := &Authenticator{Users: fakeUsers{"alice@example.test": h}, Throttle: th}
	ctx := context.Background()
	home := netip.MustParseAddr("2001:db8:1:2::10")
	if _, err := a.Authenticate(ctx, home, "alice@example.test", "pw"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	for i := 0; i < 20; i++ {
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		if _, err := a.Authenticate(ctx, ip, "alice@example.test", "guess"); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if _, err := a.Authenticate(ctx, netip.MustParseAddr("203.0.113.9"), "alice@example.test", "pw"); !errors.Is(err, ErrThrottled) {
		t.Errorf("unknown address after 20 failures: %v, want ErrThrottled", err)
	}
	// Another address of the same /64 counts as the one she used.
	if u, err := a.Authenticate(ctx, netip.MustParseAddr("2001:db8:1:2::99"), "alice@example.test", "pw"); err != nil || u != "alice@example.test" {
		t.Errorf("owner's address after 20 failures elsewhere: %q, %v", u, err)
	}
	for i := 0; i < 3; i++ {
		a.Authenticate(ctx, home, "alice@example.test", "typo")
	}
	if _, err := a.Authenticate(ctx, home, "alice@example.test", "pw"); !errors.Is(err, ErrThrottled) {
		t.Errorf("owner's address past its own limit: %v, want ErrThrottled", err)
	}
	// The exemption expires.
	now = now.Add(24 * time.Hour)
	for i := 0; i < 20; i++ {
		th.Failed(netip.AddrFrom4([4]byte{198, 51, 101, byte(i)}), "alice@example.test")
	}
	if th.Allowed(netip.MustParseAddr("2001:db8:1:2::10"), "alice@example.test") {
		t.Error("exemption outlived KnownWindow")
	}
}

type disabledUsers struct{ hash string }

func (d disabledUsers) PasswordHash(_ context.Context, u string) (string, string, error) {
	return u, d.hash, ErrDisabled
}

// A disabled user's right password fails as a wrong one does.
func TestAuthenticateDisabled(t *testing.T) {
	h, _ := HashPassword("pw")
	a := &Authenticator{Users: disabledUsers{h}}
	u, err := a.Authenticate(context.Background(), netip.MustParseAddr("127.0.0.1"), "alice@example.test", "pw")
	if u != "" || !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("Authenticate(disabled, right password) = %q, %v; want ErrInvalidCredentials", u, err)
	}
}
