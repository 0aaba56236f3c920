package main

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sluice-mail/sluice/core/dkimkey"
)

// dkimKeygenResult is what 'dkim keygen --json' prints.
type dkimKeygenResult struct {
	KeyFile    string `json:"key_file"`
	Algorithm  string `json:"algorithm"` // rsa or ed25519
	Domain     string `json:"domain"`    // normalised: the d= of signatures
	Selector   string `json:"selector"`
	RecordName string `json:"record_name"` // selector._domainkey.domain
	Record     string `json:"record"`      // the TXT value
	Zone       string `json:"zone"`        // the record as a zone file entry
	Stage      string `json:"stage"`       // YAML for pipelines.outbound
}

// dkimKeygen makes a DKIM key for DOMAIN and SELECTOR, writes it into
// --dir (data_dir/dkim by default) and prints the DNS record to publish
// and the outbound stage that signs with it. It works on files only: no
// server, no admin socket. It never replaces a key unless --force is
// given.
func dkimKeygen(c *ctx) error {
	alg := c.str("algorithm")
	if alg != dkimkey.RSA && alg != dkimkey.Ed25519 {
		return fmt.Errorf("--algorithm %q: rsa or ed25519", alg)
	}
	name, err := dkimkey.FileName(c.args[0], c.args[1])
	if err != nil {
		return err
	}
	domain, _ := dkimkey.Domain(c.args[0])
	selector, _ := dkimkey.Selector(c.args[1])
	dir := c.str("dir")
	if dir == "" {
		cfg, err := c.loadConfig()
		if err != nil {
			return fmt.Errorf("%w (or give --dir)", err)
		}
		dir = filepath.Join(cfg.DataDir, "dkim")
	}
	// The stage's key_file must be absolute: the plugin does not run in
	// this directory.
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	force := c.boolFlag("force")
	path := filepath.Join(dir, name)
	if _, err := os.Lstat(path); err == nil && !force {
		return fmt.Errorf("%s exists: keeping it (--force replaces it; mail signed with the old key fails verification once its DNS record changes)", path)
	}
	key, pub, err := dkimkey.Generate(alg)
	if err != nil {
		return err
	}
	if force {
		path, err = dkimkey.Replace(dir, domain, selector, key)
	} else {
		path, err = dkimkey.Write(dir, domain, selector, key)
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: keeping it (--force replaces it)", path)
	}
	if err != nil {
		return err
	}
	record, err := dkimkey.Record(pub)
	if err != nil {
		return err
	}
	res := dkimKeygenResult{
		KeyFile: path, Algorithm: alg, Domain: domain, Selector: selector,
		RecordName: dkimkey.RecordName(domain, selector), Record: record,
		Zone: dkimkey.ZoneEntry(domain, selector, record),
		Stage: "- plugin: dkim-sign\n" +
			"  timeout: 30s\n" +
			"  on_error: tempfail\n" +
			"  config:\n" +
			"    keys:\n" +
			"      - domain: " + domain + "\n" +
			"        selector: " + selector + "\n" +
			"        key_file: " + strconv.Quote(path) + "\n",
	}
	if c.jsonOut {
		return c.printJSON(res)
	}
	size := "256 bits"
	if k, ok := pub.(*rsa.PublicKey); ok {
		size = strconv.Itoa(k.N.BitLen()) + " bits"
	}
	fmt.Fprintf(c.stdout, "Wrote the private key (%s, %s) to %s: keep it secret.\n\n", alg, size, path)
	fmt.Fprintf(c.stdout, "Publish this TXT record in the DNS of %s:\n\n  name:  %s\n  value: %s\n\n", domain, res.RecordName, record)
	fmt.Fprintf(c.stdout, "In a zone file:\n\n%s\n\n", res.Zone)
	fmt.Fprintf(c.stdout, "Then add this stage to the outbound pipeline in the config, and reload (SIGHUP). To sign\n"+
		"with more keys (an RSA and an Ed25519 one, other domains), list them all under keys.\n\n")
	fmt.Fprintf(c.stdout, "pipelines:\n  outbound:\n")
	for _, line := range strings.Split(strings.TrimSuffix(res.Stage, "\n"), "\n") {
		fmt.Fprintf(c.stdout, "    %s\n", line)
	}
	return nil
}
