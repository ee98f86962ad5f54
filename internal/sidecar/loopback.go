package sidecar

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// procNetFiles list the TCP sockets of the network namespace; the pod's containers share
// one, so the sidecar sees the app's listeners without privileges.
var procNetFiles = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// tcpListen is the st column of a LISTEN socket.
const tcpListen = "0A"

// exposedListeners parses /proc/net/tcp or /proc/net/tcp6 text and returns the listening
// sockets on port whose address is not loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104),
// and whether a loopback socket listens on it.
func exposedListeners(text string, port int) (out []netip.AddrPort, onLoopback bool, err error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	first := true
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if first { // the header: sl local_address rem_address st ...
			first = false
			if len(fields) > 1 && fields[1] == "local_address" {
				continue
			}
		}
		if len(fields) < 4 {
			continue
		}
		if fields[3] != tcpListen {
			continue
		}
		ap, err := parseProcAddr(fields[1])
		if err != nil {
			return nil, false, fmt.Errorf("line %q: %w", sc.Text(), err)
		}
		switch {
		case int(ap.Port()) != port:
		case ap.Addr().Unmap().IsLoopback():
			onLoopback = true
		default:
			out = append(out, ap)
		}
	}
	return out, onLoopback, sc.Err()
}

// parseProcAddr reads "0100007F:1F90": the address in hex, each 32-bit word in host byte
// order (little-endian on every platform Kubernetes runs on), and the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %q has no port", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: bad port", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q: bad IP", s)
	}
	for i := 0; i < len(raw); i += 4 { // each word is little-endian
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// loopbackCheck finds whether the app port listens beyond loopback, where any pod could
// reach the app without a token. It re-reads the proc files at most every minInterval.
type loopbackCheck struct {
	port        int
	files       []string
	minInterval time.Duration
	now         func() time.Time
	onChange    func(state string)
	gauge       prometheus.Gauge // 1 while exposed

	mu      sync.Mutex
	checked time.Time
	state   string // "" when loopback only; else why not ready
	exposed bool   // state says the port listens beyond loopback (or cannot tell)
}

// check re-reads the proc files unless it did so within minInterval and returns why the
// app port is not safe ("" when it is).
func (c *loopbackCheck) check() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if since := now.Sub(c.checked); !c.checked.IsZero() && since >= 0 && since < c.minInterval {
		return c.state
	}
	c.checked = now
	exposed, listening, err := c.read()
	state := ""
	switch {
	case err != nil:
		state = fmt.Sprintf("cannot tell whether app port %d listens beyond loopback: %v; set --allow-app-non-loopback if this platform has no /proc/net/tcp", c.port, err)
	case len(exposed) > 0:
		addrs := make([]string, len(exposed))
		for i, a := range exposed {
			addrs[i] = net.JoinHostPort(a.Addr().Unmap().String(), strconv.Itoa(int(a.Port())))
		}
		state = fmt.Sprintf("app port %d listens on %s, reachable without a token: bind it to 127.0.0.1, or set tokenkeeper.dev/allow-app-non-loopback (sidecar flag --allow-app-non-loopback)",
			c.port, strings.Join(addrs, ", "))
	case !listening:
		// Not ready before the app listens either: otherwise a pod whose app is about to
		// bind 0.0.0.0 would be Ready for the moment between its start and that bind.
		state = fmt.Sprintf("app port %d is not listening on 127.0.0.1 yet", c.port)
	}
	if c.gauge != nil {
		v := 0.0
		if len(exposed) > 0 {
			v = 1
		}
		c.gauge.Set(v)
	}
	if state != c.state {
		c.state, c.exposed = state, err != nil || len(exposed) > 0
		if c.onChange != nil {
			c.onChange(state) // once per change, not per probe
		}
	}
	return c.state
}

// current is the last result without re-reading.
func (c *loopbackCheck) current() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

func (c *loopbackCheck) read() (exposed []netip.AddrPort, listening bool, err error) {
	read := 0
	for _, f := range c.files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // no IPv6 in this kernel
		}
		if err != nil {
			return nil, false, err
		}
		read++
		exp, lo, err := exposedListeners(string(b), c.port)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", f, err)
		}
		exposed, listening = append(exposed, exp...), listening || lo
	}
	if read == 0 {
		return nil, false, fmt.Errorf("none of %s exists", strings.Join(c.files, ", "))
	}
	return exposed, listening, nil
}

// loopbackCheckInterval bounds how often /readyz re-reads the proc files.
const loopbackCheckInterval = 500 * time.Millisecond

// newLoopbackCheck checks the upstream's port, unless the check is turned off or the
// upstream is not on loopback (a standalone sidecar in front of another host).
func (s *Sidecar) newLoopbackCheck(up *url.URL) *loopbackCheck {
	if s.opts.AllowAppNonLoopback {
		s.log.Info("Not checking that the app listens on loopback only (--allow-app-non-loopback): only a NetworkPolicy keeps other pods from reaching it without a token")
		return nil
	}
	host := up.Hostname()
	if ip, err := netip.ParseAddr(host); (err != nil || !ip.Unmap().IsLoopback()) && host != "localhost" {
		s.log.Info("Not checking the app's listeners: the upstream is not on loopback", "upstream", up.String())
		return nil
	}
	port, _ := strconv.Atoi(up.Port())
	if port == 0 {
		port = 80
		if up.Scheme == "https" {
			port = 443
		}
	}
	c := &loopbackCheck{
		port: port, files: procNetFiles, minInterval: loopbackCheckInterval, now: time.Now,
		gauge: s.metrics.appPortExposed.WithLabelValues(strconv.Itoa(port)),
	}
	c.onChange = func(state string) {
		if state == "" {
			s.log.Info("The app port listens on loopback only", "port", port)
			return
		}
		if c.exposed {
			s.log.Warn("Not ready: the app port is reachable around the sidecar", "port", port, "reason", state)
			return
		}
		s.log.Info("Not ready: waiting for the app port", "port", port, "reason", state)
	}
	c.check()
	return c
}
