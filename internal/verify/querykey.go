package verify

import (
	"net/url"
	"strings"
)

// hasQueryKey reports whether rawQuery holds a parameter that an app's parser could read as
// name: keys are percent-decoded ("access%5Ftoken"), a bracketed suffix is dropped
// ("access_token[]", "access_token[0]", as qs, Rack and PHP read arrays), ".", " " and an
// unclosed "[" count as "_" (PHP rewrites them so), ";" separates as "&" does for some parsers, and letters
// compare case-insensitively. name is lower case and uses "_". Allocation-free unless a key
// is encoded.
func hasQueryKey(rawQuery, name string) bool {
	for len(rawQuery) > 0 {
		var part string
		part, rawQuery, _ = cutQuery(rawQuery)
		if partHasKey(part, name) {
			return true
		}
	}
	return false
}

// removeQueryKey returns rawQuery without the parameters hasQueryKey would find, the others
// kept as sent, in their order.
func removeQueryKey(rawQuery, name string) string {
	var b strings.Builder
	for len(rawQuery) > 0 {
		part, rest, _ := cutQuery(rawQuery)
		if !partHasKey(part, name) {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(part)
		}
		rawQuery = rest
	}
	return b.String()
}

// cutQuery splits the first parameter off q at "&" or ";".
func cutQuery(q string) (part, rest string, found bool) {
	if i := strings.IndexAny(q, "&;"); i >= 0 {
		return q[:i], q[i+1:], true
	}
	return q, "", false
}

func partHasKey(part, name string) bool {
	key, _, _ := strings.Cut(part, "=")
	if strings.IndexByte(key, '%') >= 0 || strings.IndexByte(key, '+') >= 0 {
		k, err := url.QueryUnescape(key)
		if err != nil {
			k = key // a parser that gives up on the escape reads it as sent
		}
		key = k
	}
	if sameQueryKey(key, name) {
		return true
	}
	i := strings.IndexByte(key, '[')
	return i > 0 && sameQueryKey(key[:i], name)
}

func sameQueryKey(key, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '.' || c == ' ' || c == '[':
			c = '_'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// sameHeaderName reports whether header name h reads as name to some app: letters compare
// case-insensitively and "_" stands for "-", as CGI, WSGI, Rack and PHP map both to "_".
func sameHeaderName(h, name string) bool {
	if len(h) != len(name) {
		return false
	}
	for i := 0; i < len(h); i++ {
		if headerByte(h[i]) != headerByte(name[i]) {
			return false
		}
	}
	return true
}

func headerByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}
