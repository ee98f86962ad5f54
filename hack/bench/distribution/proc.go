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

	"github.com/tokenkeeper/tokenkeeper/hack/bench/procstat"
)

var (
	procCPUSeconds = procstat.CPUSeconds
	procMemKiB     = procstat.MemKiB
	percentile     = procstat.Percentile
)

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
	s.busy, s.softirq, _ = procstat.Busy()
	s.manager, _ = procCPUSeconds(managerPID)
	for _, pid := range clusterPIDs {
		if c, err := procCPUSeconds(pid); err == nil {
			s.cluster += c
		}
	}
	s.self, _ = procCPUSeconds(os.Getpid())
	s.loadavg = procstat.LoadAvg()
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
