package jwks

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// MaxFetchBytes bounds a fetched JWKS: real ones are a few KiB.
const MaxFetchBytes = 1 << 20

// Fetch gets and parses a remote JWKS (an IdP's jwks_uri). maxAge is the response's
// Cache-Control max-age, or zero when it gives none.
func Fetch(ctx context.Context, client *http.Client, uri string) (*jose.JSONWebKeySet, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("GET %s: %s", uri, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxFetchBytes+1))
	if err != nil {
		return nil, 0, err
	}
	if len(body) > MaxFetchBytes {
		return nil, 0, fmt.Errorf("GET %s: JWKS larger than %d bytes", uri, MaxFetchBytes)
	}
	set, err := Parse(body)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", uri, err)
	}
	return set, MaxAge(resp.Header.Get("Cache-Control")), nil
}

// MaxAge reads max-age from a Cache-Control header; zero when absent, no-store or no-cache.
func MaxAge(cacheControl string) time.Duration {
	for _, part := range strings.Split(cacheControl, ",") {
		part = strings.TrimSpace(strings.ToLower(part))
		if part == "no-store" || part == "no-cache" {
			return 0
		}
		if v, ok := strings.CutPrefix(part, "max-age="); ok {
			if n, err := strconv.Atoi(strings.Trim(v, `"`)); err == nil && n > 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	return 0
}
