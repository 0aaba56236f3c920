package sdk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Config is a stage's configuration: the "config" mapping of the stage in
// Sluice's YAML, as JSON.
type Config struct {
	// Stage is the stage's name in the pipeline.
	Stage string
	// StateDir is a directory the filter may keep state in (a learned
	// database, a cache). It belongs to this stage and survives restarts.
	StateDir string
	// JSON is the configuration mapping; "{}" when the stage has none.
	JSON []byte
}

// Decode decodes the configuration into v, refusing keys that v does not
// have, so that a typo in the YAML is an error rather than a silent
// default. When v points to a struct, the fields with a `default` tag are
// set to it first (see Defaults), so a key the mapping leaves out has its
// documented default.
func (c Config) Decode(v any) error {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.Elem().Kind() == reflect.Struct {
		if err := Defaults(v); err != nil {
			return fmt.Errorf("stage %s: config: %w", c.Stage, err)
		}
	}
	data := c.JSON
	if len(data) == 0 {
		data = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("stage %s: config: %w", c.Stage, err)
	}
	return nil
}

// Duration is a time.Duration that a plugin's configuration may write as a
// string, such as "30s" or "5m", or as a number of seconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err := json.Unmarshal(b, &secs); err != nil {
			return fmt.Errorf("expected a duration such as \"30s\", got %s", b)
		}
		if secs < 0 {
			return fmt.Errorf("negative duration %s", b)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (examples: 500ms, 30s, 5m)", s)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// Size is a number of bytes that a plugin's configuration may write as a
// number or as a string with a unit: KB, MB, GB (powers of 1000) or KiB,
// MiB, GiB (powers of 1024).
type Size int64

// UnmarshalJSON implements json.Unmarshaler.
func (s *Size) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err == nil {
		if n < 0 {
			return fmt.Errorf("negative size %d", n)
		}
		*s = Size(n)
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("expected a size such as \"10MiB\", got %s", b)
	}
	str = strings.TrimSpace(str)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if v, ok := strings.CutSuffix(str, u.suffix); ok {
			str, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(str, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return fmt.Errorf("invalid size %q (examples: 1048576, 10MiB, 50MB)", string(b))
	}
	*s = Size(v * mult)
	return nil
}
