package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/pgkit-dev/pgkit"
)

// maxBodyBytes bounds a JSON request body beyond the content limit.
const maxBodyOverhead = 4 << 10

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// serverError logs err and answers 503 when the database cannot be reached
// or the pool is exhausted, else 500; the client never sees the database's
// message.
func (s *Server) serverError(w http.ResponseWriter, r *http.Request, err error) {
	var down *pgkit.UnreachableError
	switch {
	case errors.As(err, &down):
		// Not logged per request: pgkit logs once when it starts backing
		// off connection attempts, and once when it connects again.
		writeError(w, http.StatusServiceUnavailable, "database unavailable, try again")
		return
	case errors.Is(err, pgkit.ErrAcquireTimeout):
		writeError(w, http.StatusServiceUnavailable, "busy, try again")
		return
	}
	if r.Context().Err() != nil {
		return // the client went away
	}
	s.log.Error("chat: request failed", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
	writeError(w, http.StatusInternalServerError, "internal error")
}

// decode reads a JSON body of at most MaxContentBytes plus some overhead
// into v, refusing unknown fields and trailing data; on failure it has
// answered (400 or 413) and returns false.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body := http.MaxBytesReader(w, r.Body, int64(s.opts.MaxContentBytes+maxBodyOverhead))
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the JSON object")
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", tooBig.Limit))
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
		return false
	}
	return true
}

// pathID parses the {id} path value; on failure it has answered 404.
func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusNotFound, "conversation not found")
		return 0, false
	}
	return id, true
}

// paging reads ?after=<id>&limit=<n> (limit 1..200, default 50); on failure
// it has answered 400.
func paging(w http.ResponseWriter, r *http.Request) (after int64, limit int, ok bool) {
	q := r.URL.Query()
	limit = 50
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "after: a non-negative id")
			return 0, 0, false
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			writeError(w, http.StatusBadRequest, "limit: 1 to 200")
			return 0, 0, false
		}
		limit = n
	}
	return after, limit, true
}

// jsonNotFound answers what the mux has no route for (404, or 405 with
// Allow) in JSON, like every other error.
func jsonNotFound(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.code >= 300 && rec.code < 400 { // a redirect (to add a trailing slash): as is
			mux.ServeHTTP(w, r)
			return
		}
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		if rec.code == 0 {
			rec.code = http.StatusNotFound
		}
		writeError(w, rec.code, fmt.Sprintf("%s: no route for %s %s", http.StatusText(rec.code), r.Method, r.URL.Path))
	})
}

// statusRecorder keeps the status (and the headers, such as Allow) and
// drops the body.
type statusRecorder struct {
	header http.Header
	code   int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}
func (s *statusRecorder) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(b), nil
}
