package auth

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// DefaultMinPasswordLength is the fewest characters a new password may
// have when PasswordPolicy.MinLength is zero.
const DefaultMinPasswordLength = 10

// ErrWeakPassword is matched (with errors.Is) by every error with which
// PasswordPolicy.Check refuses a password.
var ErrWeakPassword = errors.New("auth: the password does not meet the password policy")

// PasswordPolicy is what a new password must meet, wherever it is set:
// 'sluice user add' and 'user passwd', the admin API behind them, and any
// page or reset flow that sets one. It applies to setting a password only:
// an account whose password predates the policy still logs in with it.
type PasswordPolicy struct {
	// MinLength is the fewest characters (Unicode code points, not bytes)
	// a password may have. Zero means DefaultMinPasswordLength.
	MinLength int
}

// weakPassword is a refusal by the policy; its message says what to do.
type weakPassword string

func (e weakPassword) Error() string        { return string(e) }
func (e weakPassword) Is(target error) bool { return target == ErrWeakPassword }

// Check returns nil if password may be set for the account address, or an
// error matching ErrWeakPassword that tells the user what is wrong. A
// password is refused when it:
//   - is empty, or has fewer than MinLength characters;
//   - is longer than MaxPasswordLength bytes (HashPassword refuses those);
//   - equals, ignoring case, the address or its local part (the part
//     before the last @), e.g. "Alice@Example.org" or "ALICE" for
//     alice@example.org;
//   - is, ignoring case, in the list of the most common passwords shipped
//     with Sluice (common-passwords.txt).
func (p PasswordPolicy) Check(address, password string) error {
	min := p.MinLength
	if min <= 0 {
		min = DefaultMinPasswordLength
	}
	if n := utf8.RuneCountInString(password); n < min {
		return weakPassword(fmt.Sprintf("auth: the password is too short: use at least %d characters (it has %d)", min, n))
	}
	if len(password) > MaxPasswordLength {
		return weakPassword(fmt.Sprintf("auth: the password is longer than %d bytes: use a shorter one", MaxPasswordLength))
	}
	local := address
	if i := strings.LastIndexByte(address, '@'); i >= 0 {
		local = address[:i]
	}
	if address != "" && (strings.EqualFold(password, address) || strings.EqualFold(password, local)) {
		return weakPassword("auth: the password is the address itself: choose one that cannot be guessed from the address")
	}
	if commonPasswords()[strings.ToLower(password)] {
		return weakPassword("auth: the password is one of the most common passwords: choose one that is hard to guess, such as a few unrelated words")
	}
	return nil
}

//go:embed common-passwords.txt
var commonPasswordsFile string

// commonPasswords is the set of common-passwords.txt, lower case.
var commonPasswords = sync.OnceValue(func() map[string]bool {
	set := make(map[string]bool, 4096)
	for _, line := range strings.Split(commonPasswordsFile, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		set[strings.ToLower(line)] = true
	}
	return set
})
