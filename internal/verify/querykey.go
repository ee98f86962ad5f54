package verify

import (
	"net/url"
	"strings"
)

// hasQueryKey reports whether rawQuery holds a parameter that an app's parser could read as
// name: keys are percent-decoded ("access%5Ftoken"), a bracketed suffix is dropped
// ("access_token[]", "access_token[0]", as qs, Rack and PHP read arrays), "." and " " count
// as "_" (PHP rewrites them so), ";" separates as "&" does for some parsers, and letters
// compare case-insensitively. name is lower case and uses "_". Allocation-free unless a key
// is encoded.
func hasQueryKey(rawQuery, name string) bool {
	for len(rawQuery) > 0 {
		var part string
		if i := strings.IndexAny(rawQuery, "&;"); i >= 0 {
			part, rawQuery = rawQuery[:i], rawQuery[i+1:]
		} else {
			part, rawQuery = rawQuery, ""
		}
		key, _, _ := strings.Cut(part, "=")
		if strings.IndexByte(key, '%') >= 0 || strings.IndexByte(key, '+') >= 0 {
			k, err := url.QueryUnescape(key)
			if err != nil {
				k = key // a parser that gives up on the escape reads it as sent
			}
			key = k
		}
		if i := strings.IndexByte(key, '['); i > 0 {
			key = key[:i]
		}
		if sameQueryKey(key, name) {
			return true
		}
	}
	return false
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
		case c == '.' || c == ' ':
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
