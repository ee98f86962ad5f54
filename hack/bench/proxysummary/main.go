// Command proxysummary prints the summary of a hack/bench-proxy.sh run: from its results.tsv
// (one row per round, phase and target, figures as wrk printed them) a markdown table per
// phase with each target's median over the rounds, and the ratios against the goals, with
// the ratio of every round beside the ratio of the medians. Ratios against HAProxy
// (jwt_verify on every request) have no goal; with a second sidecar binary
// (SIDECAR_BEFORE, targets sidecar-before-*), every sidecar line is repeated for it and
// each scenario is compared between the two.
//
//	proxysummary bin/bench/proxy/results.tsv
//
// A median is the middle value of the rounds (the lower middle one for an even count), so
// every figure it prints is one wrk measured, never an interpolation. Measurements during
// which other processes used more than -disturbed CPU seconds are listed: their figures
// say as much about the other work as about the proxy.
//
// "Other CPU" is the machine's busy time minus the proxy, the upstream and wrk, as a share
// of the machine's capacity (CPUs × wall time): other processes. /proc/stat samples busy
// time at ticks while process times are exact, so it reads a few percent low, and below
// zero on an otherwise idle machine.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// row is one measurement: one target in one phase of one round.
type row struct {
	round                  int
	phase, target          string
	rps                    float64
	rpsRaw, p50Raw, p99Raw string
	p50, p99               float64 // µs
	cpuPerReq              float64 // µs
	otherPct               float64 // % of the machine
	hits, misses           string
}

func main() {
	disturbed := flag.Float64("disturbed", 10, "list measurements during which other processes used more than this percentage of the machine's CPU")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: proxysummary [-disturbed percent] results.tsv")
		os.Exit(2)
	}
	rows, err := read(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxysummary:", err)
		os.Exit(1)
	}
	if run, err := os.ReadFile(filepath.Join(filepath.Dir(flag.Arg(0)), "run.txt")); err == nil {
		fmt.Printf("%s\n", run)
	}
	write(os.Stdout, rows, *disturbed)
}

func read(path string) ([]row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var col map[string]int
	var rows []row
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if col == nil {
			col = map[string]int{}
			for i, name := range fields {
				col[name] = i
			}
			continue
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(fields) {
				return fields[i]
			}
			return ""
		}
		num := func(name string) float64 {
			v, _ := strconv.ParseFloat(get(name), 64)
			return v
		}
		r := row{
			round: int(num("round")), phase: get("phase"), target: get("target"),
			rps: num("rps"), rpsRaw: get("rps"), p50Raw: get("p50"), p99Raw: get("p99"),
			p50: num("p50_us"), p99: num("p99_us"), cpuPerReq: num("proxy_cpu_us_per_req"),
			hits: get("cache_hits"), misses: get("cache_misses"),
		}
		if m := num("machine_cpu_s"); m > 0 {
			r.otherPct = 100 * num("other_cpu_s") / m
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New(path + ": no measurements")
	}
	return rows, nil
}

// group is one phase's measurements of one target, in round order.
type group []row

func (g group) median(less func(a, b row) int) row {
	s := slices.Clone(g)
	slices.SortStableFunc(s, less)
	return s[(len(s)-1)/2]
}

func (g group) medRPS() row { return g.median(func(a, b row) int { return cmpF(a.rps, b.rps) }) }
func (g group) medP50() row { return g.median(func(a, b row) int { return cmpF(a.p50, b.p50) }) }
func (g group) medP99() row { return g.median(func(a, b row) int { return cmpF(a.p99, b.p99) }) }
func (g group) medCPU() row {
	return g.median(func(a, b row) int { return cmpF(a.cpuPerReq, b.cpuPerReq) })
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func write(w io.Writer, rows []row, disturbedAbove float64) {
	var phases, targets []string
	groups := map[string]group{}
	for _, r := range rows {
		if !slices.Contains(phases, r.phase) {
			phases = append(phases, r.phase)
		}
		if !slices.Contains(targets, r.target) {
			targets = append(targets, r.target)
		}
		k := r.phase + "/" + r.target
		groups[k] = append(groups[k], r)
	}
	for _, ph := range phases {
		fmt.Fprintf(w, "%s phase (median of the rounds; requests/s of each round after it):\n\n", ph)
		fmt.Fprintln(w, "| Target | Requests/s | Each round | p50 | p99 | Proxy CPU µs/request | Other CPU, max | Cache hits / misses |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
		for _, t := range targets {
			g := groups[ph+"/"+t]
			if len(g) == 0 {
				continue
			}
			var each []string
			maxOther := g[0].otherPct
			cache := ""
			var hits, misses int
			for _, r := range g {
				each = append(each, r.rpsRaw)
				maxOther = max(maxOther, r.otherPct)
				switch r.hits {
				case "-", "":
				case "off":
					cache = "off"
				default:
					h, _ := strconv.Atoi(r.hits)
					m, _ := strconv.Atoi(r.misses)
					hits, misses = hits+h, misses+m
					cache = fmt.Sprintf("%d / %d", hits, misses)
				}
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.3f | %s | %s |\n", t, g.medRPS().rpsRaw, strings.Join(each, " · "),
				g.medP50().p50Raw, g.medP99().p99Raw, g.medCPU().cpuPerReq, percent(maxOther), cache)
		}
		fmt.Fprintln(w)
	}

	var dist []string
	for _, r := range rows {
		if r.otherPct > disturbedAbove {
			dist = append(dist, fmt.Sprintf("round %d %s %s (%s)", r.round, r.phase, r.target, percent(r.otherPct)))
		}
	}
	if len(dist) > 0 {
		fmt.Fprintf(w, "Disturbed: other processes used more than %g%% of the machine's CPU during: %s.\n\n", disturbedAbove, strings.Join(dist, "; "))
	}

	fmt.Fprintln(w, "| Ratio | Of the medians | Each round | Goal | |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---|")
	rpsRatio := func(label, a, b string, goal float64, goalText string) {
		ga, gb := groups["load/"+a], groups["load/"+b]
		if len(ga) == 0 || len(gb) == 0 {
			return
		}
		med := ga.medRPS().rps / gb.medRPS().rps
		var each []string
		met := 0
		for i := range min(len(ga), len(gb)) {
			r := ga[i].rps / gb[i].rps
			each = append(each, ratioText(r, goal))
			if r >= goal {
				met++
			}
		}
		v := ""
		if goal > 0 {
			v = fmt.Sprintf("%s (goal met in %d of %d rounds)", verdict(med >= goal), met, len(each))
		}
		fmt.Fprintf(w, "| %s, req/s | %s | %s | %s | %s |\n", label, ratioText(med, goal), strings.Join(each, " · "), goalText, v)
	}
	for _, r := range withBefore(rpsRatios) {
		rpsRatio(r.label, r.a, r.b, r.goal, r.goalText)
	}
	// The same sidecar scenario, the sidecar under test against the one it is compared with
	// (SIDECAR_BEFORE): above 1× the sidecar under test is faster.
	for _, sc := range []string{"cached", "uncached", "rotating"} {
		rpsRatio("sidecar "+sc+" / sidecar before "+sc, "sidecar-"+sc, "sidecar-before-"+sc, 0, "")
	}
	for _, ph := range phases {
		added := func(label, a, b string, goal float64) {
			ga, gb := groups[ph+"/"+a], groups[ph+"/"+b]
			if len(ga) == 0 || len(gb) == 0 {
				return
			}
			med := ga.medP50().p50 - gb.medP50().p50
			var each []string
			met := 0
			for i := range min(len(ga), len(gb)) {
				d := ga[i].p50 - gb[i].p50
				each = append(each, fmt.Sprintf("%.0f µs", d))
				if d < goal {
					met++
				}
			}
			goalText, v := "", ""
			if goal > 0 {
				goalText = fmt.Sprintf("< %.0f µs", goal)
				v = fmt.Sprintf("%s (goal met in %d of %d rounds)", verdict(med < goal), met, len(each))
			}
			fmt.Fprintf(w, "| added p50, %s (%s phase) | %.0f µs | %s | %s | %s |\n", label, ph, med, strings.Join(each, " · "), goalText, v)
		}
		for _, r := range withBefore(addedP50s) {
			added(r.label, r.a, r.b, r.goal)
		}
	}
}

// ratio is one line of the ratio table: target a against target b, and its goal (none when
// zero).
type ratio struct {
	label, a, b string
	goal        float64
	goalText    string
}

// rpsRatios compare requests/s of the load phase. HAProxy (jwt_verify, no cache) verifies
// every request, as the uncached and rotating sidecars do; the issue that added it measured
// the sidecar's ratios against it, which carry no goal of their own.
var rpsRatios = []ratio{
	{"sidecar cached / plain proxy", "sidecar-cached", "plain", 0.9, "≥ 0.9×"},
	{"sidecar cached / oauth2-proxy", "sidecar-cached", "oauth2-proxy", 4, "≥ 4×"},
	{"sidecar uncached / oauth2-proxy", "sidecar-uncached", "oauth2-proxy", 1.5, "≥ 1.5×"},
	{"sidecar rotating / oauth2-proxy rotating", "sidecar-rotating", "oauth2-proxy-rotating", 1.5, "(≥ 1.5×, as uncached)"},
	{"sidecar cached / HAProxy", "sidecar-cached", "haproxy", 0, ""},
	{"sidecar uncached / HAProxy", "sidecar-uncached", "haproxy", 0, ""},
	{"sidecar rotating / HAProxy rotating", "sidecar-rotating", "haproxy-rotating", 0, ""},
	{"HAProxy / plain proxy", "haproxy", "plain", 0, ""},
}

// addedP50s compare p50 latency, in each phase.
var addedP50s = []ratio{
	{"sidecar cached − plain proxy", "sidecar-cached", "plain", 100, ""},
	{"sidecar uncached − plain proxy", "sidecar-uncached", "plain", 0, ""},
	{"sidecar uncached − HAProxy", "sidecar-uncached", "haproxy", 0, ""},
	{"plain proxy − direct", "plain", "direct", 0, ""},
}

// withBefore follows every line about a sidecar with the same line about the sidecar it is
// compared with (the sidecar-before-* targets), under the same goal. Lines whose targets
// were not measured print nothing.
func withBefore(rs []ratio) []ratio {
	var out []ratio
	for _, r := range rs {
		out = append(out, r)
		if rest, ok := strings.CutPrefix(r.a, "sidecar-"); ok {
			b := r
			b.label = strings.Replace(r.label, "sidecar ", "sidecar before ", 1)
			b.a = "sidecar-before-" + rest
			out = append(out, b)
		}
	}
	return out
}

// ratioText shows three decimals, or four when three would round a missed goal up to it.
func ratioText(r, goal float64) string {
	t := strconv.FormatFloat(r, 'f', 3, 64)
	if v, _ := strconv.ParseFloat(t, 64); v >= goal && r < goal {
		t = strconv.FormatFloat(r, 'f', 4, 64)
	}
	return t + "×"
}

// percent rounds to a whole percentage, without a "-0".
func percent(v float64) string {
	r := math.Round(v)
	if r == 0 {
		r = 0 // drops the sign of -0
	}
	return fmt.Sprintf("%.0f%%", r)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}
