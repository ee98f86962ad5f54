package sidecar

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Captured from a pod (trimmed): 8080 is 1F90, 9090 is 2382.
const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0500000A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 100 0 0 10 0
   2: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1003 1 0000000000000000 100 0 0 10 0
   3: 0500000A:1F90 0600000A:D431 01 00000000:00000000 00:00000000 00000000  1000        0 1004 1 0000000000000000 20 4 30 10 -1
   4: 0100017F:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1005 1 0000000000000000 100 0 0 10 0
`

const procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2002 1 0000000000000000 100 0 0 10 0
   2: 00000000000000000000000000000000:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2003 1 0000000000000000 100 0 0 10 0
   3: 0000000000000000FFFF00000500000A:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2004 1 0000000000000000 100 0 0 10 0
`

func TestExposedListeners(t *testing.T) {
	cases := []struct {
		name string
		text string
		port int
		want []string
		// onLoopback: a loopback socket listens on port too.
		onLoopback bool
	}{
		{name: "127.0.0.1 is loopback, the pod IP is not; connections are not listeners", text: procNetTCP, port: 8080, want: []string{"10.0.0.5:8080"}, onLoopback: true},
		{name: "0.0.0.0 is exposed, 127.0.1.1 is loopback", text: procNetTCP, port: 9090, want: []string{"0.0.0.0:9090"}, onLoopback: true},
		{name: "a port nobody listens on is not exposed", text: procNetTCP, port: 7000},
		{name: "::1 is loopback", text: procNetTCP6, port: 8080, onLoopback: true},
		{name: "::ffff:127.0.0.1 is loopback, :: is exposed", text: procNetTCP6, port: 9090, want: []string{"[::]:9090"}, onLoopback: true},
		{name: "a v4-mapped pod IP is exposed", text: procNetTCP6, port: 80, want: []string{"[::ffff:10.0.0.5]:80"}},
		{name: "an empty file lists nothing", text: "", port: 8080},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, lo, err := exposedListeners(tc.text, tc.port)
			if err != nil {
				t.Fatal(err)
			}
			if lo != tc.onLoopback {
				t.Errorf("onLoopback = %v, want %v", lo, tc.onLoopback)
			}
			var s []string
			for _, a := range got {
				s = append(s, a.String())
			}
			if strings.Join(s, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("exposed %q, want %q", s, tc.want)
			}
		})
	}
	if _, _, err := exposedListeners("   0: 0100007F1F90 00000000:0000 0A\n", 8080); err == nil {
		t.Error("a malformed address was accepted")
	}
}

func TestParseProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000000000000000000001000000:0016": "[::1]:22",
		"B80D0120000000000000000001000000:01BB": "[2001:db8::1]:443",
	} {
		got, err := parseProcAddr(in)
		if err != nil || got != netip.MustParseAddrPort(want) {
			t.Errorf("parseProcAddr(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}

// On this machine's real /proc/net/tcp: /readyz flips as the app port moves between
// 127.0.0.1 and 0.0.0.0, the startup endpoint does not, and the log says it once.
func TestReadinessFailsWhileTheAppPortListensBeyondLoopback(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Fatalf("this test needs /proc/net/tcp: %v", err)
	}
	app, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	p := port(t, app.Addr().String())
	f := newFixture(t, withOptions(func(o *Options) { o.Upstream = "http://127.0.0.1:" + strconv.Itoa(p) }))
	exposed := func() float64 {
		return metricValue(t, f.sc.metrics.appPortExposed.WithLabelValues(strconv.Itoa(p)))
	}

	for range 3 {
		r := f.admin("/readyz")
		want := "app port " + strconv.Itoa(p) + " listens on 0.0.0.0:" + strconv.Itoa(p) + ", reachable without a token: bind it to 127.0.0.1"
		if r.status != 503 || !strings.Contains(r.body, want) {
			t.Fatalf("/readyz with the app on 0.0.0.0: %d %q, want 503 containing %q", r.status, r.body, want)
		}
	}
	if n := strings.Count(f.logs.String(), "Not ready: the app port is reachable around the sidecar"); n != 1 {
		t.Errorf("logged the exposed port %d times, want once:\n%s", n, f.logs.String())
	}
	if exposed() != 1 {
		t.Errorf("app_port_exposed = %v, want 1", exposed())
	}
	for _, path := range []string{"/startupz", "/readyz-startup"} {
		if r := f.admin(path); r.status != 200 {
			t.Errorf("%s: %d %q, want 200: the startup probe does not wait for the app", path, r.status, r.body)
		}
	}

	app.Close()
	app, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	eventually(t, "/readyz to pass with the app on 127.0.0.1", func() bool { return f.admin("/readyz").status == 200 })
	if exposed() != 0 {
		t.Errorf("app_port_exposed = %v, want 0", exposed())
	}
	if !strings.Contains(f.logs.String(), "listens on loopback only") {
		t.Errorf("the change back was not logged:\n%s", f.logs.String())
	}
}

func TestAllowAppNonLoopbackOptsOut(t *testing.T) {
	app, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	f := newFixture(t, withOptions(func(o *Options) {
		o.Upstream = "http://127.0.0.1:" + strconv.Itoa(port(t, app.Addr().String()))
		o.AllowAppNonLoopback = true
	}))
	if r := f.admin("/readyz"); r.status != 200 {
		t.Fatalf("/readyz: %d %q, want 200 with --allow-app-non-loopback", r.status, r.body)
	}
}

// The ticker re-checks too, so the readiness metric follows an app that starts after the
// sidecar even when nobody asks /readyz.
func TestTheLoopbackCheckRunsOnTheTicker(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := port(t, probe.Addr().String())
	probe.Close()
	f := newFixture(t, withOptions(func(o *Options) {
		o.Upstream = "http://127.0.0.1:" + strconv.Itoa(p)
		o.PollInterval = 50 * time.Millisecond
	}))
	// Not ready before the app listens, so a pod is never Ready in the moment between its
	// app's start and a bind to 0.0.0.0.
	if ok, why := f.sc.Ready(); ok || !strings.Contains(why, "is not listening on 127.0.0.1 yet") {
		t.Fatalf("before the app listens: ready=%v %q, want not ready: not listening yet", ok, why)
	}
	app, err := net.Listen("tcp4", "0.0.0.0:"+strconv.Itoa(p))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ticker to see the exposed port", func() bool {
		_, why := f.sc.Ready()
		return strings.Contains(why, "listens on 0.0.0.0:"+strconv.Itoa(p))
	})
	app.Close()
	app, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	eventually(t, "the ticker to see the app on loopback", func() bool { ok, _ := f.sc.Ready(); return ok })
}

// Where the proc files cannot be read the check fails closed, with the opt-out named.
func TestTheLoopbackCheckFailsClosedWithoutProcFiles(t *testing.T) {
	dir := t.TempDir()
	c := &loopbackCheck{port: 8080, files: []string{dir + "/tcp", dir + "/tcp6"}, now: time.Now}
	if why := c.check(); !strings.Contains(why, "cannot tell whether app port 8080 listens beyond loopback") ||
		!strings.Contains(why, "--allow-app-non-loopback") {
		t.Fatalf("state %q", why)
	}
	if err := os.WriteFile(dir+"/tcp", []byte(procNetTCP), 0o644); err != nil {
		t.Fatal(err)
	}
	if why := c.check(); !strings.Contains(why, "listens on 10.0.0.5:8080") {
		t.Fatalf("with tcp only (no IPv6): state %q", why)
	}
}
