package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// results writes a results.tsv with one load-phase row per round for each target, at the
// given requests/s, and reads it back as proxysummary does.
func results(t *testing.T, rps map[string][]float64) []row {
	t.Helper()
	var b strings.Builder
	b.WriteString("round\tphase\ttarget\trps\tp50\tp99\tp50_us\tp99_us\trequests\tnon2xx\tsocket_errors\tproxy_cpu_s\tproxy_cpu_us_per_req\tmachine_busy_pct\tcache_hits\tcache_misses\tupstream_cpu_s\twrk_cpu_s\tother_cpu_s\tmachine_cpu_s\n")
	for _, target := range []string{"plain", "sidecar-cached", "sidecar-before-cached", "sidecar-uncached", "haproxy", "sidecar-rotating", "haproxy-rotating"} {
		for i, v := range rps[target] {
			fmt.Fprintf(&b, "%d\tload\t%s\t%.2f\t1.00ms\t2.00ms\t1000.00\t2000.00\t%d\t0\t-\t1.00\t50.000\t90.0\t-\t-\t0.50\t0.50\t0.00\t20.00\n",
				i+1, target, v, int(v*10))
		}
	}
	path := filepath.Join(t.TempDir(), "results.tsv")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	rows, err := read(path)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func summary(t *testing.T, rps map[string][]float64) string {
	t.Helper()
	var out strings.Builder
	write(&out, results(t, rps), 10)
	return out.String()
}

func TestSummaryRatios(t *testing.T) {
	out := summary(t, map[string][]float64{
		"plain":                 {20000, 20000, 20000},
		"sidecar-cached":        {18000, 19000, 20000},
		"sidecar-before-cached": {15000, 19000, 30000},
		"sidecar-uncached":      {8000, 9000, 10000},
		"haproxy":               {15000, 15000, 12000},
		"sidecar-rotating":      {7000, 7500, 8000},
		"haproxy-rotating":      {14000, 14000, 14000},
	})
	for _, want := range []string{
		// Ratios of the medians (19000/15000), then round by round.
		"| sidecar cached / HAProxy, req/s | 1.267× | 1.200× · 1.267× · 1.667× |  |  |",
		"| sidecar uncached / HAProxy, req/s | 0.600× | 0.533× · 0.600× · 0.833× |  |  |",
		"| sidecar rotating / HAProxy rotating, req/s | 0.536× | 0.500× · 0.536× · 0.571× |  |  |",
		"| HAProxy / plain proxy, req/s | 0.750× |",
		// The sidecar it is compared with gets the same lines, under the same goals.
		"| sidecar cached / plain proxy, req/s | 0.950× | 0.900× · 0.950× · 1.000× | ≥ 0.9× | met (goal met in 3 of 3 rounds) |",
		"| sidecar before cached / plain proxy, req/s | 0.950× | 0.750× · 0.950× · 1.500× | ≥ 0.9× | met (goal met in 2 of 3 rounds) |",
		"| sidecar before cached / HAProxy, req/s | 1.267× | 1.000× · 1.267× · 2.500× |  |  |",
		"| sidecar cached / sidecar before cached, req/s | 1.000× | 1.200× · 1.000× · 0.667× |  |  |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the summary lacks the line\n%s\nin\n%s", want, out)
		}
	}
	// Targets that were not measured get no line: there is no before-uncached here.
	for _, absent := range []string{"sidecar before uncached", "oauth2-proxy, req/s", "sidecar uncached / sidecar before uncached"} {
		if strings.Contains(out, absent) {
			t.Errorf("the summary names %q, which was not measured:\n%s", absent, out)
		}
	}
}

func TestSummaryWithoutHAProxyOrBefore(t *testing.T) {
	out := summary(t, map[string][]float64{
		"plain":          {20000},
		"sidecar-cached": {17000},
	})
	if !strings.Contains(out, "| sidecar cached / plain proxy, req/s | 0.850× | 0.850× | ≥ 0.9× | **missed** (goal met in 0 of 1 rounds) |") {
		t.Errorf("the missed goal is not reported:\n%s", out)
	}
	if strings.Contains(out, "HAProxy") || strings.Contains(out, "before") {
		t.Errorf("a run without HAProxy or a second sidecar names them:\n%s", out)
	}
}
