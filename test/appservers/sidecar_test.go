package appservers

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
	"github.com/tokenkeeper/tokenkeeper/internal/sidecar"
)

// A fixed instant: token validity does not depend on the wall clock.
var t0 = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)

const issuer = "https://issuer.example"

var (
	keyOnce sync.Once
	key     *keys.Key
	keyErr  error
)

func signingKey(t *testing.T) *keys.Key {
	t.Helper()
	keyOnce.Do(func() { key, keyErr = keys.Generate(rand.Reader, keys.Params{Algorithm: "ES256"}) })
	if keyErr != nil {
		t.Fatalf("generating a key: %v", keyErr)
	}
	return key
}

// token signs a token valid at t0 for sub alice with the given groups.
func token(t *testing.T, groups ...string) string {
	t.Helper()
	k := signingKey(t)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Algorithm), Key: k.Private},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.KID))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(map[string]any{
		"iss": issuer, "sub": "alice", "aud": "api", "groups": groups,
		"iat": t0.Add(-time.Minute).Unix(), "exp": t0.Add(time.Hour).Unix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// newSidecar starts the real sidecar (New + Handler) in front of upstream, with the policy
// spec and a JWKS holding the signing key, and returns its URL.
func newSidecar(t *testing.T, upstream string, spec tkv1.TokenPolicySpec) string {
	t.Helper()
	spec.Issuer, spec.Audiences = issuer, []string{"api"}
	spec.TrustedKeys = []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: "app"}}}
	policy, err := yaml.Marshal(&tkv1.TokenPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: tkv1.GroupVersion.String(), Kind: "TokenPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"},
		Spec:       spec,
	})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jwks.Marshal([]jose.JSONWebKey{signingKey(t).PublicJWK()})
	if err != nil {
		t.Fatal(err)
	}
	pf, jf, rf := sidecar.BundleFiles(t.TempDir())
	for path, data := range map[string][]byte{pf: policy, jf: doc} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sc, err := sidecar.New(sidecar.Options{Upstream: upstream, PolicyFile: pf, JWKSFile: jf, RevocationsFile: rf,
		PolicyName: "app", Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatalf("sidecar.New: %v", err)
	}
	if ok, why := sc.Started(); !ok {
		t.Fatalf("the sidecar did not start: %s (policy in %s)", why, filepath.Base(pf))
	}
	srv := httptest.NewServer(sc.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// send makes one request; headers are sent with their names exactly as given (an
// underscore spelling stays one).
func send(t *testing.T, method, url string, headers ...[2]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		req.Header[h[0]] = append(req.Header[h[0]], h[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func bearer(tok string) [2]string { return [2]string{"Authorization", "Bearer " + tok} }

// expressEcho is what the Express app saw.
type expressEcho struct {
	Handler        string            `json:"handler"`
	Method         string            `json:"method"`
	OriginalMethod string            `json:"originalMethod"`
	Path           string            `json:"path"`
	Query          map[string]any    `json:"query"`
	Headers        map[string]string `json:"headers"`
}

func decodeExpress(t *testing.T, body []byte) expressEcho {
	t.Helper()
	var e expressEcho
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("the Express app answered %q: %v", body, err)
	}
	return e
}

// wsgiEcho is what the WSGI app saw.
type wsgiEcho struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Environ map[string]string `json:"environ"`
}

func decodeWSGI(t *testing.T, body []byte) wsgiEcho {
	t.Helper()
	var e wsgiEcho
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("the WSGI app answered %q: %v", body, err)
	}
	return e
}

func admins() []tkv1.ClaimRequirement {
	return []tkv1.ClaimRequirement{{Name: "groups", Values: []string{"admin"}}}
}

// expressPolicy protects the admin routes and the DELETE handler and leaves the rest open,
// as a site with public pages does.
var expressPolicy = tkv1.TokenPolicySpec{
	Rules: []tkv1.RouteRule{
		{PathPrefix: "/admin", RequiredClaims: admins()},
		{PathPrefix: "/items", Methods: []string{"DELETE"}, RequiredClaims: admins()},
		{PathPrefix: "/", Anonymous: true},
	},
}

// The app itself, without the sidecar, reads the requests the way the tests below guard
// against: if it did not, they would prove nothing.
func TestTheAppServersReadRequestsAsAttacksAssume(t *testing.T) {
	t.Run("Express serves /ADMIN/users from its /admin/users handler", func(t *testing.T) {
		_, body := send(t, "GET", expressURL+"/ADMIN/users")
		if e := decodeExpress(t, body); e.Handler != "admin-users" {
			t.Fatalf("handler %q", e.Handler)
		}
	})
	t.Run("Express serves a POST with X-HTTP-Method-Override: DELETE from its DELETE handler", func(t *testing.T) {
		_, body := send(t, "POST", expressURL+"/items/1", [2]string{"X-HTTP-Method-Override", "DELETE"})
		if e := decodeExpress(t, body); e.Handler != "delete-item" {
			t.Fatalf("handler %q", e.Handler)
		}
	})
	t.Run("Express serves a POST with an encoded _method=DELETE query from its DELETE handler", func(t *testing.T) {
		_, body := send(t, "POST", expressURL+"/items/1?%5Fmethod=DELETE")
		if e := decodeExpress(t, body); e.Handler != "delete-item" {
			t.Fatalf("handler %q", e.Handler)
		}
	})
	t.Run("Express reads access%5Ftoken and access_token[] as access_token", func(t *testing.T) {
		_, body := send(t, "GET", expressURL+"/public?access%5Ftoken=a&access_token[]=b")
		if e := decodeExpress(t, body); e.Query["access_token"] == nil {
			t.Fatalf("query %v", e.Query)
		}
	})
	t.Run("wsgiref reads X_Auth_Token as HTTP_X_AUTH_TOKEN", func(t *testing.T) {
		_, body := send(t, "GET", wsgiURL+"/", [2]string{"X_Auth_Token", "forged"})
		if e := decodeWSGI(t, body); e.Environ["HTTP_X_AUTH_TOKEN"] != "forged" {
			t.Fatalf("environ %v", e.Environ)
		}
	})
}

// Express routes case-insensitively by default: /ADMIN/users must need what /admin/users
// needs, or a catch-all anonymous rule opens the admin handler.
func TestExpressPathCaseGetsNoLooserTreatment(t *testing.T) {
	proxy := newSidecar(t, expressURL, expressPolicy)
	dev, admin := token(t, "dev"), token(t, "admin")
	for _, path := range []string{"/admin/users", "/ADMIN/users", "/Admin/Users", "/aDMIN/USERS/"} {
		t.Run(path+" without a token is refused", func(t *testing.T) {
			if status, body := send(t, "GET", proxy+path); status != http.StatusUnauthorized {
				t.Fatalf("status %d, body %q", status, body)
			}
		})
		t.Run(path+" with a token outside the admin group is forbidden", func(t *testing.T) {
			if status, body := send(t, "GET", proxy+path, bearer(dev)); status != http.StatusForbidden {
				t.Fatalf("status %d, body %q", status, body)
			}
		})
		t.Run(path+" with an admin token reaches the admin handler", func(t *testing.T) {
			status, body := send(t, "GET", proxy+path, bearer(admin))
			if status != http.StatusOK {
				t.Fatalf("status %d, body %q", status, body)
			}
			if e := decodeExpress(t, body); e.Handler != "admin-users" {
				t.Fatalf("handler %q", e.Handler)
			}
		})
	}
	t.Run("an anonymous page stays anonymous", func(t *testing.T) {
		status, body := send(t, "GET", proxy+"/About")
		if status != http.StatusOK || decodeExpress(t, body).Handler != "catch-all" {
			t.Fatalf("status %d, body %q", status, body)
		}
	})
}

// method-override serves a POST from the DELETE handler; the DELETE-only rule never saw a
// DELETE.
func TestExpressMethodOverrideNeverReachesTheDeleteHandler(t *testing.T) {
	proxy := newSidecar(t, expressURL, expressPolicy)
	dev := token(t, "dev")
	for _, tc := range []struct {
		name   string
		target string
		header [2]string
	}{
		{"the X-HTTP-Method-Override header", "/items/1", [2]string{"X-HTTP-Method-Override", "DELETE"}},
		{"the header in lower case", "/items/1", [2]string{"x-http-method-override", "DELETE"}},
		{"the header spelled with underscores", "/items/1", [2]string{"X_HTTP_Method_Override", "DELETE"}},
		{"the X-HTTP-Method header", "/items/1", [2]string{"X-HTTP-Method", "DELETE"}},
		{"the X-Method-Override header", "/items/1", [2]string{"X-Method-Override", "DELETE"}},
		{"a _method query parameter", "/items/1?_method=DELETE", [2]string{"Accept", "*/*"}},
		{"an encoded _method query parameter", "/items/1?%5Fmethod=DELETE", [2]string{"Accept", "*/*"}},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			status, body := send(t, "POST", proxy+tc.target, bearer(dev), tc.header)
			if status != http.StatusBadRequest {
				t.Fatalf("status %d, body %q", status, body)
			}
		})
	}
	t.Run("a plain POST reaches the app as a POST", func(t *testing.T) {
		status, body := send(t, "POST", proxy+"/items/1", bearer(dev))
		if e := decodeExpress(t, body); status != http.StatusOK || e.Handler != "catch-all" || e.Method != "POST" {
			t.Fatalf("status %d, saw %+v", status, e)
		}
	})
	t.Run("a DELETE needs the admin group", func(t *testing.T) {
		if status, body := send(t, "DELETE", proxy+"/items/1", bearer(dev)); status != http.StatusForbidden {
			t.Fatalf("status %d, body %q", status, body)
		}
	})
}

// qs reads an encoded key and a bracketed one as access_token: neither may reach the app
// unverified, and next to a verified bearer token they make the request ambiguous.
func TestExpressNeverSeesAQueryToken(t *testing.T) {
	proxy := newSidecar(t, expressURL, expressPolicy)
	for _, query := range []string{"access%5Ftoken=forged", "access_token[]=forged", "access_token%5B0%5D=forged", "%61ccess_token=forged", "a=1;access_token=forged"} {
		t.Run(query+" is removed on an anonymous route", func(t *testing.T) {
			status, body := send(t, "GET", proxy+"/public?keep=1&"+query)
			e := decodeExpress(t, body)
			if status != http.StatusOK || e.Query["keep"] != "1" {
				t.Fatalf("status %d, query %v", status, e.Query)
			}
			for k := range e.Query {
				if strings.Contains(k, "access_token") {
					t.Fatalf("the app read %q in %v", k, e.Query)
				}
			}
		})
		t.Run(query+" next to a valid bearer token is ambiguous", func(t *testing.T) {
			if status, body := send(t, "GET", proxy+"/admin/users?"+query, bearer(token(t, "admin"))); status != http.StatusUnauthorized {
				t.Fatalf("status %d, body %q", status, body)
			}
		})
	}
}

// WSGI maps "-" and "_" alike to "_": an underscore spelling of the token header or of a
// forwarded-claim header must not reach the app as the real one.
func TestWSGINeverSeesUnderscoreSpoofedHeaders(t *testing.T) {
	proxy := newSidecar(t, wsgiURL, tkv1.TokenPolicySpec{
		TokenSource:   &tkv1.TokenSource{Header: "X-Auth-Token"},
		ForwardClaims: []tkv1.ClaimHeader{{Claim: "sub", Header: "X-User"}},
		Rules:         []tkv1.RouteRule{{PathPrefix: "/public", Anonymous: true}},
	})
	valid := token(t, "dev")
	cases := []struct {
		name    string
		path    string
		headers [][2]string
		status  int
		environ map[string]string // "": absent
	}{
		{"an underscore token header on an anonymous route is removed", "/public",
			[][2]string{{"X_Auth_Token", "forged"}}, 200, map[string]string{"HTTP_X_AUTH_TOKEN": ""}},
		{"an underscore token header next to a valid token is ambiguous", "/api",
			[][2]string{{"X-Auth-Token", valid}, {"X_Auth_Token", "forged"}}, 401, nil},
		{"an underscore token header alone is no token", "/api",
			[][2]string{{"X_Auth_Token", valid}}, 401, nil},
		{"a valid token is verified and not forwarded", "/api",
			[][2]string{{"X-Auth-Token", valid}}, 200, map[string]string{"HTTP_X_AUTH_TOKEN": "", "HTTP_X_USER": "alice"}},
		{"an underscore claim header next to a verified token is replaced", "/api",
			[][2]string{{"X-Auth-Token", valid}, {"X_User", "mallory"}}, 200, map[string]string{"HTTP_X_USER": "alice"}},
		{"an underscore claim header on an anonymous route is removed", "/public",
			[][2]string{{"X_User", "mallory"}, {"x_user", "mallory"}}, 200, map[string]string{"HTTP_X_USER": ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := send(t, "GET", proxy+tc.path, tc.headers...)
			if status != tc.status {
				t.Fatalf("status %d, want %d (body %q)", status, tc.status, body)
			}
			if tc.status != http.StatusOK {
				return
			}
			e := decodeWSGI(t, body)
			for k, want := range tc.environ {
				if got, ok := e.Environ[k]; want == "" && ok || want != "" && got != want {
					t.Errorf("%s = %q, want %q (environ %v)", k, got, want, e.Environ)
				}
			}
		})
	}
}
