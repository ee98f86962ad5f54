package jwks

import (
	"context"
	"fmt"
	"io"
	"net/http"

	jose "github.com/go-jose/go-jose/v4"
)

// MaxFetchBytes bounds a fetched JWKS: real ones are a few KiB.
const MaxFetchBytes = 1 << 20

// Fetch gets a remote JWKS (an IdP's jwks_uri) and returns its usable signing keys for the
// allowed algorithms (see Usable) and the response headers, for CacheLifetime.
func Fetch(ctx context.Context, client *http.Client, uri string, allowed []string) ([]jose.JSONWebKey, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", uri, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxFetchBytes+1))
	if err != nil {
		return nil, nil, err
	}
	if len(body) > MaxFetchBytes {
		return nil, nil, fmt.Errorf("GET %s: JWKS larger than %d bytes", uri, MaxFetchBytes)
	}
	keys, _, err := Usable(body, allowed)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", uri, err)
	}
	if len(keys) == 0 {
		return nil, nil, fmt.Errorf("GET %s: no usable signing key", uri)
	}
	return keys, resp.Header, nil
}
