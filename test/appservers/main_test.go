// Package appservers runs real app servers behind a real, in-process sidecar: Express 4 (with
// its default case-insensitive routing and the method-override middleware) and the Python
// standard library's wsgiref. Where what gets past the sidecar depends on how an app server
// reads a request, these tests show it on the server itself, not on a mock.
//
// Each server starts once per test binary. node, npm and python3 must be on PATH: a missing
// one fails the run. node_modules is installed with "npm ci" when absent.
package appservers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// App servers started by TestMain: their base URLs.
var expressURL, wsgiURL string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := os.Stat(filepath.Join("express", "node_modules")); errors.Is(err, os.ErrNotExist) {
		if err := npmCI(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: installing the Express app's packages: %v\n", err)
			return 1
		}
	}
	var err error
	var stopExpress, stopWSGI func()
	if expressURL, stopExpress, err = startApp(ctx, "node", "express/app.js"); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting the Express app: %v\n", err)
		return 1
	}
	defer stopExpress()
	if wsgiURL, stopWSGI, err = startApp(ctx, "python3", "wsgi/app.py"); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: starting the WSGI app: %v\n", err)
		return 1
	}
	defer stopWSGI()
	return m.Run()
}

func npmCI(ctx context.Context) error {
	if _, err := exec.LookPath("npm"); err != nil {
		return fmt.Errorf("npm is required to run the Express app: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = "express"
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci: %w\n%s", err, out)
	}
	return nil
}

// startApp runs an app that listens on 127.0.0.1 on a free port and prints "listening
// <port>" once it accepts connections. stop kills it and waits for it.
func startApp(ctx context.Context, interpreter, script string) (url string, stop func(), err error) {
	if _, err := exec.LookPath(interpreter); err != nil {
		return "", nil, fmt.Errorf("%s is required: %w", interpreter, err)
	}
	cmd := exec.CommandContext(ctx, interpreter, script, "0")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case line, ok := <-lines:
		port, found := strings.CutPrefix(line, "listening ")
		if !ok || !found {
			stop()
			return "", nil, fmt.Errorf("%s %s exited or printed %q instead of \"listening <port>\"", interpreter, script, line)
		}
		return "http://127.0.0.1:" + port, stop, nil
	case <-time.After(time.Minute):
		stop()
		return "", nil, fmt.Errorf("%s %s did not listen within a minute", interpreter, script)
	}
}
