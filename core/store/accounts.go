package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sluice-mail/sluice/core/address"
	"github.com/sluice-mail/sluice/core/auth"
)

// Domain is a local domain: mail for it is delivered into mailboxes here.
type Domain struct {
	Name    string    `json:"name"` // lower-case ASCII
	Created time.Time `json:"created"`
}

// User is a mail account.
type User struct {
	ID           uint64    `json:"id"`
	Address      string    `json:"address"` // canonical: lower-case, no tag
	PasswordHash string    `json:"password_hash,omitempty"`
	Alternate    string    `json:"alternate,omitempty"` // for password recovery
	Quota        int64     `json:"quota"`               // bytes; 0 means none
	Created      time.Time `json:"created"`
	// Admin gives the user the admin role (the web admin pages). A
	// record written before the field existed has none.
	Admin bool `json:"admin,omitempty"`
	// Disabled users cannot log in (PasswordHash reports
	// auth.ErrDisabled) but still receive mail.
	Disabled bool `json:"disabled,omitempty"`
}

// UserInfo is a User with its current usage, for listings.
type UserInfo struct {
	User
	Used int64 `json:"used"`
}

// Alias expands one address (or, for a catch-all, "@domain") into others,
// local or remote.
type Alias struct {
	Address string    `json:"address"`
	Targets []string  `json:"targets"`
	Created time.Time `json:"created"`
}

// DefaultMailboxes are created for every new user, with their RFC 6154
// special-use attribute.
var DefaultMailboxes = []struct{ Name, SpecialUse string }{
	{"INBOX", ""},
	{"Sent", `\Sent`},
	{"Drafts", `\Drafts`},
	{"Junk", `\Junk`},
	{"Trash", `\Trash`},
	{"Archive", `\Archive`},
}

// canonical parses s and returns its lookup form: lower-case, without a
// tag when stripTag is set.
func (s *Store) canonical(str string, stripTag bool) (address.Address, error) {
	a, err := address.Parse(strings.TrimSpace(str))
	if err != nil {
		return address.Address{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if a.IsNull() {
		return address.Address{}, fmt.Errorf("%w: empty address", ErrInvalid)
	}
	delim := ""
	if stripTag {
		delim = s.opts.RecipientDelimiter
	}
	c, _ := a.Canonical(delim)
	return c, nil
}

func normDomain(name string) (string, error) {
	d, err := address.ParseDomain(strings.TrimSpace(name))
	if err != nil || strings.HasPrefix(d, "[") {
		return "", fmt.Errorf("%w: %q is not a domain name", ErrInvalid, name)
	}
	return d, nil
}

// AddDomain makes name a local domain.
func (s *Store) AddDomain(name string) (Domain, error) {
	d, err := normDomain(name)
	if err != nil {
		return Domain{}, err
	}
	dom := Domain{Name: d, Created: time.Now().UTC()}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bDomains)
		if b.Get([]byte(d)) != nil {
			return fmt.Errorf("%w: domain %s", ErrExists, d)
		}
		return putJSON(b, []byte(d), dom)
	})
	return dom, err
}

// EnsureDomain adds name if it is not a local domain yet.
func (s *Store) EnsureDomain(name string) error {
	_, err := s.AddDomain(name)
	if errors.Is(err, ErrExists) {
		return nil
	}
	return err
}

// RemoveDomain removes a local domain that has no users and no aliases.
func (s *Store) RemoveDomain(name string) error {
	d, err := normDomain(name)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bDomains).Get([]byte(d)) == nil {
			return fmt.Errorf("%w: domain %s", ErrNotFound, d)
		}
		for _, b := range [][]byte{bUsers, bAliases} {
			c := tx.Bucket(b).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if domainOf(string(k)) == d {
					return fmt.Errorf("%w: %s has %s", ErrDomainNotEmpty, d, k)
				}
			}
		}
		return tx.Bucket(bDomains).Delete([]byte(d))
	})
}

func domainOf(addr string) string {
	return addr[strings.LastIndexByte(addr, '@')+1:]
}

// Domains lists the local domains in name order.
func (s *Store) Domains() ([]Domain, error) {
	var out []Domain
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bDomains).ForEach(func(k, v []byte) error {
			var d Domain
			if err := getJSON(tx.Bucket(bDomains), k, &d); err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	})
	return out, err
}

// IsLocalDomain reports whether domain (normalised) is local.
func (s *Store) IsLocalDomain(domain string) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bDomains).Get([]byte(domain)) != nil
		return nil
	})
	return ok, err
}

// NewUser describes a user to create.
type NewUser struct {
	Address      string
	PasswordHash string // from auth.HashPassword
	Alternate    string // optional
	// Quota in bytes; negative means the store's default quota, 0 none.
	Quota int64
	Admin bool // the admin role
}

// AddUser creates a user in a local domain, with the default mailboxes.
func (s *Store) AddUser(nu NewUser) (User, error) {
	a, err := s.canonical(nu.Address, false)
	if err != nil {
		return User{}, err
	}
	if d := s.opts.RecipientDelimiter; d != "" && strings.Contains(a.Local, d) {
		return User{}, fmt.Errorf("%w: %q contains the recipient delimiter %q", ErrInvalid, a, d)
	}
	if nu.PasswordHash == "" {
		return User{}, fmt.Errorf("%w: no password", ErrInvalid)
	}
	alt, err := s.checkAlternate(nu.Alternate)
	if err != nil {
		return User{}, err
	}
	quota := nu.Quota
	if quota < 0 {
		quota = s.opts.DefaultQuota
	}
	u := User{Address: a.String(), PasswordHash: nu.PasswordHash, Alternate: alt, Quota: quota, Created: time.Now().UTC(), Admin: nu.Admin}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bDomains).Get([]byte(a.Domain)) == nil {
			return fmt.Errorf("%w: %s (add it with 'sluice domain add %s')", ErrNotLocal, a.Domain, a.Domain)
		}
		users := tx.Bucket(bUsers)
		if users.Get([]byte(u.Address)) != nil {
			return fmt.Errorf("%w: user %s", ErrExists, u.Address)
		}
		if tx.Bucket(bAliases).Get([]byte(u.Address)) != nil {
			return fmt.Errorf("%w: %s is an alias", ErrExists, u.Address)
		}
		id, err := users.NextSequence()
		if err != nil {
			return err
		}
		u.ID = id
		if err := putJSON(users, []byte(u.Address), u); err != nil {
			return err
		}
		if err := tx.Bucket(bUserIDs).Put(u64(id), []byte(u.Address)); err != nil {
			return err
		}
		if err := tx.Bucket(bUsage).Put(u64(id), u64(0)); err != nil {
			return err
		}
		for _, mb := range DefaultMailboxes {
			if _, err := createMailbox(tx, id, mb.Name, mb.SpecialUse); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return User{}, err
	}
	return u, nil
}

func (s *Store) checkAlternate(alt string) (string, error) {
	if alt == "" {
		return "", nil
	}
	a, err := address.Parse(strings.TrimSpace(alt))
	if err != nil || a.IsNull() {
		return "", fmt.Errorf("%w: alternate address %q", ErrInvalid, alt)
	}
	return a.String(), nil
}

// User returns the user with the given address (case-insensitive; a tag is
// not stripped).
func (s *Store) User(addr string) (User, error) {
	a, err := s.canonical(addr, false)
	if err != nil {
		return User{}, err
	}
	var u User
	err = s.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bUsers), []byte(a.String()), &u)
	})
	if errors.Is(err, ErrNotFound) {
		return User{}, fmt.Errorf("%w: user %s", ErrNotFound, a)
	}
	return u, err
}

// UserByID returns the user with the given ID.
func (s *Store) UserByID(id uint64) (User, error) {
	var u User
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		u, err = userByID(tx, id)
		return err
	})
	return u, err
}

func userByID(tx *bolt.Tx, id uint64) (User, error) {
	var u User
	addr := tx.Bucket(bUserIDs).Get(u64(id))
	if addr == nil {
		return u, fmt.Errorf("%w: user id %d", ErrNotFound, id)
	}
	err := getJSON(tx.Bucket(bUsers), addr, &u)
	return u, err
}

// PasswordHash implements auth.Users. The username is an address; its
// case does not matter. For a disabled user it returns the hash with
// auth.ErrDisabled.
func (s *Store) PasswordHash(_ context.Context, username string) (string, string, error) {
	u, err := s.User(username)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		return "", "", auth.ErrNoSuchUser
	}
	if err != nil {
		return "", "", err
	}
	if u.Disabled {
		return u.Address, u.PasswordHash, auth.ErrDisabled
	}
	return u.Address, u.PasswordHash, nil
}

// Users lists the users, with their usage, in address order. A non-empty
// domain restricts the list to that domain.
func (s *Store) Users(domain string) ([]UserInfo, error) {
	var out []UserInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		usage := tx.Bucket(bUsage)
		return tx.Bucket(bUsers).ForEach(func(k, v []byte) error {
			if domain != "" && domainOf(string(k)) != domain {
				return nil
			}
			var u User
			if err := getJSON(tx.Bucket(bUsers), k, &u); err != nil {
				return err
			}
			info := UserInfo{User: u}
			if b := usage.Get(u64(u.ID)); b != nil {
				info.Used = int64(binary.BigEndian.Uint64(b))
			}
			out = append(out, info)
			return nil
		})
	})
	return out, err
}

func (s *Store) updateUser(addr string, fn func(*User) error) error {
	a, err := s.canonical(addr, false)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bUsers)
		var u User
		if err := getJSON(b, []byte(a.String()), &u); err != nil {
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%w: user %s", ErrNotFound, a)
			}
			return err
		}
		if err := fn(&u); err != nil {
			return err
		}
		return putJSON(b, []byte(a.String()), u)
	})
}

// SetPasswordHash replaces a user's password hash.
func (s *Store) SetPasswordHash(addr, hash string) error {
	if hash == "" {
		return fmt.Errorf("%w: no password", ErrInvalid)
	}
	return s.updateUser(addr, func(u *User) error { u.PasswordHash = hash; return nil })
}

// SetAlternate sets (or, with "", clears) a user's alternate address.
func (s *Store) SetAlternate(addr, alt string) error {
	a, err := s.checkAlternate(alt)
	if err != nil {
		return err
	}
	return s.updateUser(addr, func(u *User) error {
		if a != "" && strings.EqualFold(a, u.Address) {
			return fmt.Errorf("%w: the alternate address must differ from the account's own", ErrInvalid)
		}
		u.Alternate = a
		return nil
	})
}

// SetQuota sets a user's quota in bytes; 0 means none.
func (s *Store) SetQuota(addr string, quota int64) error {
	if quota < 0 {
		return fmt.Errorf("%w: negative quota", ErrInvalid)
	}
	return s.updateUser(addr, func(u *User) error { u.Quota = quota; return nil })
}

// SetAdmin gives (true) or takes away (false) a user's admin role.
func (s *Store) SetAdmin(addr string, admin bool) error {
	return s.updateUser(addr, func(u *User) error { u.Admin = admin; return nil })
}

// SetDisabled disables (true) or enables (false) a user's logins; mail
// to a disabled user is still delivered.
func (s *Store) SetDisabled(addr string, disabled bool) error {
	return s.updateUser(addr, func(u *User) error { u.Disabled = disabled; return nil })
}

// RemoveUser deletes a user with all their mailboxes and messages.
func (s *Store) RemoveUser(addr string) error {
	a, err := s.canonical(addr, false)
	if err != nil {
		return err
	}
	var blobs []string
	var changes []Change
	err = s.db.Update(func(tx *bolt.Tx) error {
		blobs, changes = blobs[:0], changes[:0]
		var u User
		if err := getJSON(tx.Bucket(bUsers), []byte(a.String()), &u); err != nil {
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%w: user %s", ErrNotFound, a)
			}
			return err
		}
		mbs, err := userMailboxes(tx, u.ID)
		if err != nil {
			return err
		}
		for _, mb := range mbs {
			bs, err := deleteMailbox(tx, mb)
			if err != nil {
				return err
			}
			blobs = append(blobs, bs...)
			changes = append(changes, Change{UserID: u.ID, MailboxID: mb})
		}
		for _, del := range []struct {
			b []byte
			k []byte
		}{{bUsers, []byte(u.Address)}, {bUserIDs, u64(u.ID)}, {bUsage, u64(u.ID)}} {
			if err := tx.Bucket(del.b).Delete(del.k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.removeBlobs(blobs)
	s.notify(changes...)
	return nil
}

// AddAlias creates an alias, or adds targets to an existing one. An address
// of the form "@domain" is the domain's catch-all.
func (s *Store) AddAlias(addr string, targets []string) (Alias, error) {
	key, domain, err := s.aliasKey(addr)
	if err != nil {
		return Alias{}, err
	}
	if len(targets) == 0 {
		return Alias{}, fmt.Errorf("%w: an alias needs at least one target", ErrInvalid)
	}
	var clean []string
	for _, t := range targets {
		ta, err := address.Parse(strings.TrimSpace(t))
		if err != nil || ta.IsNull() {
			return Alias{}, fmt.Errorf("%w: target %q", ErrInvalid, t)
		}
		clean = append(clean, ta.String())
	}
	var al Alias
	err = s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bDomains).Get([]byte(domain)) == nil {
			return fmt.Errorf("%w: %s", ErrNotLocal, domain)
		}
		if tx.Bucket(bUsers).Get([]byte(key)) != nil {
			return fmt.Errorf("%w: %s is a user", ErrExists, key)
		}
		b := tx.Bucket(bAliases)
		al = Alias{}
		if err := getJSON(b, []byte(key), &al); errors.Is(err, ErrNotFound) {
			al = Alias{Address: key, Created: time.Now().UTC()}
		} else if err != nil {
			return err
		}
		for _, t := range clean {
			if !containsFold(al.Targets, t) {
				al.Targets = append(al.Targets, t)
			}
		}
		return putJSON(b, []byte(key), al)
	})
	return al, err
}

// RemoveAlias removes the given targets from an alias, or the whole alias
// when targets is empty or no target would remain.
func (s *Store) RemoveAlias(addr string, targets []string) error {
	key, _, err := s.aliasKey(addr)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bAliases)
		var al Alias
		if err := getJSON(b, []byte(key), &al); err != nil {
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%w: alias %s", ErrNotFound, key)
			}
			return err
		}
		if len(targets) == 0 {
			return b.Delete([]byte(key))
		}
		var keep []string
		for _, t := range al.Targets {
			if !containsFold(targets, t) {
				keep = append(keep, t)
			}
		}
		if len(keep) == len(al.Targets) {
			return fmt.Errorf("%w: %s is not a target of %s", ErrNotFound, strings.Join(targets, ", "), key)
		}
		if len(keep) == 0 {
			return b.Delete([]byte(key))
		}
		al.Targets = keep
		return putJSON(b, []byte(key), al)
	})
}

// Aliases lists the aliases in address order.
func (s *Store) Aliases() ([]Alias, error) {
	var out []Alias
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bAliases)
		return b.ForEach(func(k, _ []byte) error {
			var al Alias
			if err := getJSON(b, k, &al); err != nil {
				return err
			}
			out = append(out, al)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, err
}

// aliasKey returns the bucket key for an alias address, and its domain.
func (s *Store) aliasKey(addr string) (key, domain string, err error) {
	addr = strings.TrimSpace(addr)
	if strings.HasPrefix(addr, "@") {
		d, err := normDomain(addr[1:])
		if err != nil {
			return "", "", err
		}
		return "@" + d, d, nil
	}
	a, err := s.canonical(addr, false)
	if err != nil {
		return "", "", err
	}
	return a.String(), a.Domain, nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// usage returns the bytes a user's messages take.
func usage(tx *bolt.Tx, userID uint64) int64 {
	if b := tx.Bucket(bUsage).Get(u64(userID)); b != nil {
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}

func addUsage(tx *bolt.Tx, userID uint64, delta int64) error {
	v := usage(tx, userID) + delta
	if v < 0 {
		v = 0
	}
	return tx.Bucket(bUsage).Put(u64(userID), u64(uint64(v)))
}

// userMailboxes returns the IDs of a user's mailboxes.
func userMailboxes(tx *bolt.Tx, userID uint64) ([]uint64, error) {
	var ids []uint64
	prefix := u64(userID)
	c := tx.Bucket(bMailboxes).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		ids = append(ids, binary.BigEndian.Uint64(v))
	}
	return ids, nil
}
