package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestPasswordPolicy(t *testing.T) {
	const addr = "Alice.Smith@Example.org"
	for _, tc := range []struct {
		name     string
		min      int
		password string
		want     string // "" means accepted; otherwise part of the message
	}{
		{"one character", 0, "x", "too short: use at least 10 characters (it has 1)"},
		{"empty", 0, "", "too short"},
		{"default minimum, one short", 0, "wbq-7zk-pl", ""},
		{"default minimum, nine", 0, "wbq-7zk-p", "too short: use at least 10"},
		{"configured minimum", 12, "wbq-7zk-plm", "use at least 12 characters (it has 11)"},
		{"configured minimum met", 12, "wbq-7zk-plmn", ""},
		{"low minimum", 1, "x", ""},
		// Ten characters of 2 or 3 bytes each: counted as ten.
		{"unicode counted in characters", 0, "ñandúçéßøå", ""},
		{"unicode nine characters, many bytes", 0, "日本語のパスワード", "(it has 9)"},
		{"emoji", 4, "🔑🔒🗝", "(it has 3)"},
		{"too long", 1, strings.Repeat("a", MaxPasswordLength+1), "longer than 1024 bytes"},
		{"longest", 1, strings.Repeat("ab", MaxPasswordLength/2), ""},
		{"the address", 0, "alice.smith@example.org", "the address itself"},
		{"the address, other case", 0, "ALICE.SMITH@EXAMPLE.ORG", "the address itself"},
		{"the local part", 0, "alice.smith", "the address itself"},
		{"the local part, other case", 0, "Alice.SMITH", "the address itself"},
		{"containing the local part is fine", 0, "alice.smith is here", ""},
		{"common", 0, "password123", "one of the most common passwords"},
		{"common, other case", 0, "PassWord123", "one of the most common passwords"},
		{"common keyboard walk", 0, "qwertyuiop", "one of the most common passwords"},
		{"common digits", 0, "1234567890", "one of the most common passwords"},
		{"common with a year", 0, "password2024", "one of the most common passwords"},
		{"common phrase", 0, "iloveyou12", "one of the most common passwords"},
		{"README example", 0, "correct horse battery", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := PasswordPolicy{MinLength: tc.min}.Check(addr, tc.password)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want nil", tc.password, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check(%q) = %v, want an error containing %q", tc.password, err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "auth: ") {
				t.Errorf("error %q does not start with the package name", err)
			}
			if !errors.Is(err, ErrWeakPassword) {
				t.Errorf("error %v does not match ErrWeakPassword", err)
			}
		})
	}
}

// An address without @ (as the admin API might be given) still has its
// whole self compared.
func TestPasswordPolicyAddressWithoutAt(t *testing.T) {
	if err := (PasswordPolicy{}).Check("postmaster-box", "Postmaster-Box"); !errors.Is(err, ErrWeakPassword) {
		t.Errorf("Check = %v, want the address refused", err)
	}
	if err := (PasswordPolicy{}).Check("", "wbq-7zk-pl"); err != nil {
		t.Errorf("Check with no address = %v", err)
	}
}

// The shipped list is lower case, without duplicates or blank entries,
// small, and long enough to matter at the default minimum.
func TestCommonPasswordsList(t *testing.T) {
	if len(commonPasswordsFile) > 50<<10 {
		t.Errorf("common-passwords.txt is %d bytes; keep it under 50 KB", len(commonPasswordsFile))
	}
	seen := map[string]bool{}
	long := 0
	for i, line := range strings.Split(strings.TrimRight(commonPasswordsFile, "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if line == "" || line != strings.TrimSpace(line) || line != strings.ToLower(line) {
			t.Errorf("line %d: %q is not a trimmed lower-case entry", i+1, line)
		}
		if seen[line] {
			t.Errorf("line %d: %q twice", i+1, line)
		}
		seen[line] = true
		if len([]rune(line)) >= DefaultMinPasswordLength {
			long++
		}
	}
	if len(commonPasswords()) != len(seen) || long < 500 {
		t.Errorf("%d entries (%d in the set), %d of at least %d characters; want hundreds", len(seen), len(commonPasswords()), long, DefaultMinPasswordLength)
	}
}
