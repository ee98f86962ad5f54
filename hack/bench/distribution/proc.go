package main

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, which is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPUSeconds is utime+stime of pid from /proc/<pid>/stat.
func procCPUSeconds(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading /proc/%d/stat: %w", pid, err)
	}
	s := string(raw)
	// The command name is in parentheses and may hold spaces; fields follow the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64) // utime, field 14 of the line
	st, err2 := strconv.ParseFloat(f[12], 64) // stime, field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	return (ut + st) / clockTicks, nil
}

// procMemKiB reads VmRSS and VmHWM of pid from /proc/<pid>/status.
func procMemKiB(pid int) (rss, hwm int64, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmHWM:":
			hwm, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmRSS:":
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return rss, hwm, nil
}

// resetPeakRSS sets VmHWM back to the current RSS (clear_refs 5, Linux 4.0+), so a later
// VmHWM is the peak of what happened since.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

type machineSample struct {
	at                     time.Time
	busy, softirq          float64
	manager, cluster, self float64
	loadavg                string
}

// sampleMachine reads the busy time of all CPUs (/proc/stat), of the manager, of the
// control plane's processes and of this program.
func sampleMachine(managerPID int, clusterPIDs []int) machineSample {
	s := machineSample{at: time.Now()}
	if raw, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(raw), "\n")
		f := strings.Fields(line)
		if len(f) >= 9 && f[0] == "cpu" {
			var v [8]float64 // user nice system idle iowait irq softirq steal
			for i := range v {
				v[i], _ = strconv.ParseFloat(f[i+1], 64)
			}
			s.busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / clockTicks
			s.softirq = (v[5] + v[6]) / clockTicks
		}
	}
	s.manager, _ = procCPUSeconds(managerPID)
	for _, pid := range clusterPIDs {
		if c, err := procCPUSeconds(pid); err == nil {
			s.cluster += c
		}
	}
	s.self, _ = procCPUSeconds(os.Getpid())
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		s.loadavg = strings.Join(strings.Fields(string(la))[:3], " ")
	}
	return s
}

// Machine is what used the CPUs between two samples.
type Machine struct {
	Seconds        float64 `json:"seconds"`
	BusyCPUSeconds float64 `json:"busyCPUSeconds"`
	// IRQSeconds is the irq+softirq part of BusyCPUSeconds: loopback network processing of
	// the subscribers' connections is there, and it is charged to no process when the kernel
	// accounts irq time apart, so it then lands in OtherCPUSecs.
	IRQSeconds     float64 `json:"irqCPUSeconds"`
	ManagerCPUSecs float64 `json:"managerCPUSeconds"`
	ClusterCPUSecs float64 `json:"clusterCPUSeconds"` // kube-apiserver + etcd
	BenchCPUSecs   float64 `json:"benchCPUSeconds"`   // this program (the subscribers)
	OtherCPUSecs   float64 `json:"otherCPUSeconds"`   // everything else on the machine
	LoadAvgStart   string  `json:"loadAvgStart"`
	LoadAvgEnd     string  `json:"loadAvgEnd"`
}

func machineBetween(a, b machineSample) Machine {
	m := Machine{
		Seconds:        round3(b.at.Sub(a.at).Seconds()),
		BusyCPUSeconds: round3(b.busy - a.busy),
		IRQSeconds:     round3(b.softirq - a.softirq),
		ManagerCPUSecs: round3(b.manager - a.manager),
		ClusterCPUSecs: round3(b.cluster - a.cluster),
		BenchCPUSecs:   round3(b.self - a.self),
		LoadAvgStart:   a.loadavg, LoadAvgEnd: b.loadavg,
	}
	m.OtherCPUSecs = round3(m.BusyCPUSeconds - m.ManagerCPUSecs - m.ClusterCPUSecs - m.BenchCPUSecs)
	return m
}

// scrape fetches a Prometheus text page.
func scrape(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// metricSum adds the samples of metric name whose labels include every want (name="value").
func metricSum(page, name string, want ...string) float64 {
	sum := 0.0
	for _, line := range strings.Split(page, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue // another metric with this prefix
		}
		ok := true
		for _, w := range want {
			if !strings.Contains(rest, w) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Latency is the p50/p99/max of a set of durations, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	Min   float64 `json:"minMs"`
	P50   float64 `json:"p50Ms"`
	P90   float64 `json:"p90Ms"`
	P99   float64 `json:"p99Ms"`
	Max   float64 `json:"maxMs"`
}

func latency(ms []float64) Latency {
	s := slices.Clone(ms)
	slices.Sort(s)
	l := Latency{Count: len(s)}
	if len(s) > 0 {
		l.Min = round3(s[0])
		l.P50, l.P90, l.P99, l.Max = round3(percentile(s, 50)), round3(percentile(s, 90)), round3(percentile(s, 99)), round3(s[len(s)-1])
	}
	return l
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
