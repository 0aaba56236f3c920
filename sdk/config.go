package sdk

import (
	"bytes"
	"encoding/json"
	"fmt"
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
// default.
func (c Config) Decode(v any) error {
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
