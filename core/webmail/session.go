package webmail

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"
)

// cookieName is the session cookie's name. The __Host- prefix makes
// browsers accept it only with Secure, Path=/ and no Domain, so that no
// other host (such as a sibling subdomain) can set or shadow it.
const cookieName = "__Host-sluice_session"

// session is one logged-in browser.
type session struct {
	user string // canonical address
	// stamp is the SHA-256 of the user's password hash at login: a
	// password changed since (passwd, a reset) ends the session.
	stamp    [sha256.Size]byte
	created  time.Time
	lastSeen time.Time
}

// sessions holds the sessions in memory, under the SHA-256 of their IDs,
// so that the map holds nothing a cookie could be made from.
type sessions struct {
	idle, max time.Duration
	now       func() time.Time // tests set it

	mu     sync.Mutex
	byHash map[[sha256.Size]byte]*session
	sweep  time.Time
}

func newSessions(idle, max time.Duration) *sessions {
	return &sessions{idle: idle, max: max, now: time.Now, byHash: map[[sha256.Size]byte]*session{}}
}

// create starts a session for user, whose credentials are stamp (see
// session.stamp), under a new random 256-bit ID and returns the ID, which
// goes into the cookie.
func (ss *sessions) create(user string, stamp [sha256.Size]byte) string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	id := base64.RawURLEncoding.EncodeToString(b[:])
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.byHash[sha256.Sum256([]byte(id))] = &session{user: user, stamp: stamp, created: now, lastSeen: now}
	if now.Sub(ss.sweep) > ss.idle {
		ss.sweep = now
		for k, s := range ss.byHash {
			if ss.expired(s, now) {
				delete(ss.byHash, k)
			}
		}
	}
	return id
}

// get returns the user of the session id and marks it used, or "" when
// there is no such session or it has expired (it is then deleted).
func (ss *sessions) get(id string) string {
	if id == "" {
		return ""
	}
	h := sha256.Sum256([]byte(id))
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byHash[h]
	if s == nil {
		return ""
	}
	if ss.expired(s, now) {
		delete(ss.byHash, h)
		return ""
	}
	s.lastSeen = now
	return s.user
}

// stamp returns the credentials stamp the session id was created with
// (the zero value without a session).
func (ss *sessions) stamp(id string) [sha256.Size]byte {
	h := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s := ss.byHash[h]; s != nil {
		return s.stamp
	}
	return [sha256.Size]byte{}
}

// remove ends the session id, if there is one.
func (ss *sessions) remove(id string) {
	h := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.byHash, h)
}

func (ss *sessions) expired(s *session, now time.Time) bool {
	return now.Sub(s.lastSeen) >= ss.idle || now.Sub(s.created) >= ss.max
}
