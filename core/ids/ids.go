// Package ids makes the identifiers Sluice gives messages: queue IDs and
// the names of message files. An ID is 16 characters of lower-case base32
// (digits and letters without i, l, o, u): 56 bits of the creation time in
// microseconds, then 24 random bits. IDs sort by creation time, are safe
// as file names, and do not repeat in practice (two IDs made in the same
// microsecond collide once in 16 million; callers that need certainty
// create their files with O_EXCL).
package ids

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"time"
)

// Length is the length of every ID.
const Length = 16

var encoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// New returns a new ID.
func New() string {
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMicro())<<8)
	if _, err := rand.Read(b[7:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return encoding.EncodeToString(b[:])
}

// Valid reports whether s has the form of an ID, so that it can be used
// in a file name.
func Valid(s string) bool {
	if len(s) != Length {
		return false
	}
	_, err := encoding.DecodeString(s)
	return err == nil
}
