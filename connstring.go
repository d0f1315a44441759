package pgkit

import (
	"net/url"
	"os"
	"strings"
)

// connParams returns the parameters a connection string sets, in either of the
// forms pgx accepts (a postgres:// URL or a key=value DSN), with the URL's user
// password under "password". Open uses it to know which settings the URL gave
// (they win over pgkit's defaults) and which password to keep out of errors.
// It never fails: a string pgx cannot parse is reported by pgx itself.
func connParams(connString string) map[string]string {
	params := urlParams(connString)
	// The libpq environment fills what the string leaves out, as pgx does.
	for key, env := range map[string]string{"password": "PGPASSWORD", "application_name": "PGAPPNAME", "connect_timeout": "PGCONNECT_TIMEOUT"} {
		if v := os.Getenv(env); v != "" && params[key] == "" {
			params[key] = v
		}
	}
	return params
}

// urlParams is connParams without the environment.
func urlParams(connString string) map[string]string {
	params := make(map[string]string)
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			// Still find the password, so the parse error can be redacted.
			if at := strings.LastIndex(connString, "@"); at > 0 {
				userinfo := connString[strings.Index(connString, "://")+3 : at]
				if _, pw, ok := strings.Cut(userinfo, ":"); ok {
					params["password"] = pw
				}
			}
			return params
		}
		if pw, ok := u.User.Password(); ok {
			params["password"] = pw
		}
		for k, v := range u.Query() {
			if len(v) > 0 {
				params[k] = v[0]
			}
		}
		return params
	}
	for s := strings.TrimSpace(connString); s != ""; s = strings.TrimSpace(s) {
		key, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		key = strings.TrimSpace(key)
		rest = strings.TrimLeft(rest, " \t\n\r")
		var val strings.Builder
		if strings.HasPrefix(rest, "'") {
			// Quoted value: backslash escapes, ends at the next unescaped quote.
			i := 1
			for ; i < len(rest) && rest[i] != '\''; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				val.WriteByte(rest[i])
			}
			s = rest[min(i+1, len(rest)):]
		} else {
			end := strings.IndexAny(rest, " \t\n\r")
			if end < 0 {
				end = len(rest)
			}
			for i := 0; i < end; i++ {
				if rest[i] == '\\' && i+1 < end {
					i++
				}
				val.WriteByte(rest[i])
			}
			s = rest[end:]
		}
		params[key] = val.String()
	}
	return params
}
