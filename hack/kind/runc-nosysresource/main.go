// Command runc-nosysresource is an OCI runtime wrapper for hosts whose capability bounding
// set lacks CAP_SYS_RESOURCE (some VMs): there, runc refuses every container that asks for
// it, and kind's privileged node containers all do. It removes CAP_SYS_RESOURCE from the
// bundle's config.json (create/run) and from exec's --process file, then runs the real runc.
// hack/kind/host.sh installs it only on hosts that need it.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

const dropped = "CAP_SYS_RESOURCE"

func main() {
	bundle, process := "", ""
	args := os.Args[1:]
	for i, a := range args {
		next := ""
		if i+1 < len(args) {
			next = args[i+1]
		}
		switch {
		case a == "--bundle" || a == "-b":
			bundle = next
		case strings.HasPrefix(a, "--bundle="):
			bundle = strings.TrimPrefix(a, "--bundle=")
		case a == "--process" || a == "-p":
			process = next
		case strings.HasPrefix(a, "--process="):
			process = strings.TrimPrefix(a, "--process=")
		}
	}
	if bundle != "" {
		must(strip(filepath.Join(bundle, "config.json"), "process", "capabilities"))
	}
	if process != "" {
		must(strip(process, "capabilities"))
	}
	runc := os.Getenv("REAL_RUNC")
	if runc == "" {
		runc = "/usr/sbin/runc"
		if _, err := os.Stat(runc); err != nil {
			if p, err := exec.LookPath("runc"); err == nil {
				runc = p
			}
		}
	}
	must(syscall.Exec(runc, append([]string{"runc"}, args...), os.Environ()))
}

// strip removes the capability from every set under path in the JSON file. Numbers are kept
// exactly (json.Number), so large limits survive the round trip.
func strip(file string, path ...string) error {
	data, err := os.ReadFile(file)
	if err != nil || !bytes.Contains(data, []byte(dropped)) {
		return nil // nothing to do; runc reports a missing file itself
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("parsing %s: %w", file, err)
	}
	node := doc
	for _, p := range path {
		child, ok := node[p].(map[string]any)
		if !ok {
			return nil
		}
		node = child
	}
	for set, v := range node {
		list, ok := v.([]any)
		if !ok {
			continue
		}
		kept := list[:0]
		for _, c := range list {
			if c != dropped {
				kept = append(kept, c)
			}
		}
		node[set] = kept
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "runc-nosysresource:", err)
		os.Exit(1)
	}
}
