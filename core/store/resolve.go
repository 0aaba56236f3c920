package store

import (
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/sluice-mail/sluice/core/address"
)

// Target is where mail for one recipient ends up after alias expansion.
type Target struct {
	// Address is a local user's canonical address, or a remote address
	// as written in the alias.
	Address string
	// UserID is the local user, or 0 for a remote address.
	UserID uint64
	// OverQuota is set for a local user who has reached their quota.
	OverQuota bool
}

// Local reports whether t is a local mailbox.
func (t Target) Local() bool { return t.UserID != 0 }

// maxAliasDepth bounds alias chains; longer chains are a configuration
// loop in all but name.
const maxAliasDepth = 10

// Resolve expands a recipient in a local domain into its targets: a user
// (after sub-address stripping), the expansion of an alias, or the domain's
// catch-all, in that order of preference. It returns ErrNotLocal when the
// domain is not local and ErrUnknownUser when nothing matches. Targets are
// deduplicated; alias loops end where they meet an address already seen.
func (s *Store) Resolve(rcpt address.Address) ([]Target, error) {
	var out []Target
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bDomains).Get([]byte(rcpt.Domain)) == nil {
			return ErrNotLocal
		}
		r := resolver{tx: tx, delim: s.opts.RecipientDelimiter, seen: map[string]bool{}}
		if err := r.expand(rcpt, 0); err != nil {
			return err
		}
		if len(r.out) == 0 {
			return fmt.Errorf("%w: %s", ErrUnknownUser, rcpt)
		}
		out = r.out
		return nil
	})
	return out, err
}

type resolver struct {
	tx    *bolt.Tx
	delim string
	seen  map[string]bool
	out   []Target
}

func (r *resolver) add(t Target) {
	key := strings.ToLower(t.Address)
	for _, o := range r.out {
		if strings.ToLower(o.Address) == key {
			return
		}
	}
	r.out = append(r.out, t)
}

func (r *resolver) expand(a address.Address, depth int) error {
	if depth > maxAliasDepth {
		return fmt.Errorf("%w: alias chain longer than %d at %s", ErrUnknownUser, maxAliasDepth, a)
	}
	if r.tx.Bucket(bDomains).Get([]byte(a.Domain)) == nil {
		r.add(Target{Address: a.String()})
		return nil
	}
	full, _ := a.Canonical("")
	base, _ := a.Canonical(r.delim)
	for _, key := range []string{full.String(), base.String()} {
		if r.seen[key] {
			return nil
		}
	}
	r.seen[full.String()] = true
	r.seen[base.String()] = true

	// An alias for the full address (with its tag) wins, then the user,
	// then an alias for the address without the tag.
	if ok, err := r.alias(full.String(), depth); ok || err != nil {
		return err
	}
	var u User
	if err := getJSON(r.tx.Bucket(bUsers), []byte(base.String()), &u); err == nil {
		r.add(Target{Address: u.Address, UserID: u.ID, OverQuota: u.Quota > 0 && usage(r.tx, u.ID) >= u.Quota})
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	if base != full {
		if ok, err := r.alias(base.String(), depth); ok || err != nil {
			return err
		}
	}
	catchAll := "@" + a.Domain
	if !r.seen[catchAll] {
		r.seen[catchAll] = true
		if ok, err := r.alias(catchAll, depth); ok || err != nil {
			return err
		}
	}
	return nil
}

func (r *resolver) alias(key string, depth int) (bool, error) {
	var al Alias
	if err := getJSON(r.tx.Bucket(bAliases), []byte(key), &al); errors.Is(err, ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	for _, t := range al.Targets {
		ta, err := address.Parse(t)
		if err != nil {
			continue
		}
		if err := r.expand(ta, depth+1); err != nil {
			return true, err
		}
	}
	return true, nil
}

// OverQuota reports whether the user has reached their quota.
func (s *Store) OverQuota(userID uint64) (bool, error) {
	var over bool
	err := s.db.View(func(tx *bolt.Tx) error {
		u, err := userByID(tx, userID)
		if err != nil {
			return err
		}
		over = u.Quota > 0 && usage(tx, userID) >= u.Quota
		return nil
	})
	return over, err
}

// SenderAddresses returns the addresses a user may send as: their own, and
// every alias (not a catch-all) whose expansion reaches them. The
// senderpolicy filter enforces it for authenticated mail.
func (s *Store) SenderAddresses(user string) ([]string, error) {
	u, err := s.User(user)
	if err != nil {
		return nil, err
	}
	out := []string{u.Address}
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bAliases).ForEach(func(k, _ []byte) error {
			key := string(k)
			if strings.HasPrefix(key, "@") {
				return nil
			}
			a, err := address.Parse(key)
			if err != nil {
				return nil
			}
			r := resolver{tx: tx, delim: s.opts.RecipientDelimiter, seen: map[string]bool{}}
			if err := r.expand(a, 0); err != nil {
				return nil
			}
			for _, t := range r.out {
				if t.UserID == u.ID {
					out = append(out, key)
					break
				}
			}
			return nil
		})
	})
	return out, err
}
