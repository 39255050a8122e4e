package backfill

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode/utf8"
)

func readJSONL(src *bufio.Reader, limit int, yield func(Row, error) bool) {
	lines := &lineReader{src: src, limit: limit}
	seen := false
	for {
		b, tooLong, err := lines.next()
		switch {
		case err == io.EOF:
			if !seen {
				yield(Row{}, &FormatError{Reason: "the file is empty: no JSON lines"})
			}
			return
		case err != nil:
			yield(Row{}, inputError(err, lines.line+1))
			return
		case tooLong:
			seen = true
			if !yield(Row{Line: lines.line}, &RowError{Line: lines.line, Reason: tooLongReason(limit)}) {
				return
			}
			continue
		case isBlank(b):
			continue
		}
		seen = true
		if !yield(jsonRow(b, lines.line)) {
			return
		}
	}
}

// jsonRow reads one JSON line.
func jsonRow(b []byte, line int) (Row, error) {
	raw := []string{string(b)}
	bad := func(reason string) (Row, error) {
		return Row{Line: line, Raw: raw}, &RowError{Line: line, Reason: reason, Raw: raw}
	}
	if !utf8.Valid(b) {
		return bad("not valid UTF-8")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field == "" {
			return bad("must be a JSON object, got " + jsonKind(b))
		}
		return bad("bad JSON: " + err.Error())
	}
	if obj == nil {
		return bad("must be a JSON object, got null")
	}
	session, reason := jsonString(obj, "session_id", true)
	if reason != "" {
		return bad(reason)
	}
	account, reason := jsonString(obj, "account_id", true)
	if reason != "" {
		return bad(reason)
	}
	row := Row{Line: line, SessionID: strings.TrimSpace(session), AccountID: account, Raw: raw}
	created, reason := jsonString(obj, "created_at", false)
	if reason == "" {
		row.CreatedAt, reason = parseCreatedAt(created)
	}
	if reason != "" {
		return row, &RowError{Line: line, Reason: reason, Raw: raw}
	}
	return row, nil
}

// jsonString returns the string member name of obj, or why it cannot. An
// absent or null member that is not required is "".
func jsonString(obj map[string]json.RawMessage, name string, required bool) (string, string) {
	v, ok := obj[name]
	switch {
	case !ok && required:
		return "", name + " is missing"
	case !ok || !required && string(v) == "null":
		return "", ""
	case v[0] != '"':
		return "", name + ": must be a string, got " + jsonKind(v)
	case hasLoneSurrogate(v):
		return "", name + `: has a \u escape of half a UTF-16 surrogate pair, which is not a character`
	}
	if bytes.IndexByte(v, '\\') < 0 {
		// Without escapes a valid string literal is its bytes in quotes.
		return string(v[1 : len(v)-1]), ""
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", name + ": " + err.Error() // not reached: the line was parsed
	}
	return s, ""
}

// jsonKind names the kind of a JSON value by its first byte.
func jsonKind(v []byte) string {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// hasLoneSurrogate reports whether the JSON string literal s has a \u
// escape of a UTF-16 surrogate that is not part of a pair; encoding/json
// decodes one as U+FFFD. s is known to be valid JSON.
func hasLoneSurrogate(s []byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		i++ // the escaped byte
		if s[i] != 'u' {
			continue
		}
		r := hex4(s[i+1 : i+5])
		i += 4
		switch {
		case 0xdc00 <= r && r <= 0xdfff:
			return true
		case 0xd800 <= r && r <= 0xdbff:
			if i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
				if lo := hex4(s[i+3 : i+7]); 0xdc00 <= lo && lo <= 0xdfff {
					i += 6
					continue
				}
			}
			return true
		}
	}
	return false
}

// hex4 decodes four hex digits (known to be valid).
func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// lineReader reads lines of at most limit bytes (not counting the line
// end); the bytes of a longer line are dropped as they are read.
type lineReader struct {
	src   *bufio.Reader
	limit int
	buf   []byte
	line  int // lines read so far
	eof   bool
}

// next returns the next line without its line end ("\n", "\r\n", or a last
// "\r"), valid until the following call, or tooLong for a line over the
// limit. err is io.EOF after the last line, or a read error.
func (l *lineReader) next() (line []byte, tooLong bool, err error) {
	if l.eof {
		return nil, false, io.EOF
	}
	l.buf = l.buf[:0]
	read, whole := false, []byte(nil)
	for {
		chunk, err := l.src.ReadSlice('\n')
		read = read || len(chunk) > 0
		switch {
		case tooLong:
		case err == nil && len(l.buf) == 0:
			whole = chunk // the common case: no copy
		case len(l.buf)+len(chunk) > l.limit+2:
			tooLong, l.buf = true, l.buf[:0]
		default:
			l.buf = append(l.buf, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			l.eof = true
			if !read {
				return nil, false, io.EOF
			}
		} else if err != nil {
			return nil, false, err
		}
		break
	}
	l.line++
	if tooLong {
		return nil, true, nil
	}
	if whole == nil {
		whole = l.buf
	}
	whole = bytes.TrimSuffix(whole, []byte("\n"))
	whole = bytes.TrimSuffix(whole, []byte("\r"))
	if len(whole) > l.limit {
		return nil, true, nil
	}
	return whole, false, nil
}
