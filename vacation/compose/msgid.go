package compose

import "strings"

// Bounds on the message identifiers taken from the original.
const (
	// maxMsgID is the longest identifier kept, in octets between < and >.
	// Real ones are under 100; RFC 5322 bounds a line at 998.
	maxMsgID = 250
	// maxRefs and maxRefsLen bound the reply's References field: at most
	// this many identifiers and about this many octets. Whatever the
	// original carried, our header stays small.
	maxRefs    = 20
	maxRefsLen = 2000
	// maxRawRefs bounds the raw References (or In-Reply-To) read: only its
	// first and last identifiers are kept, so the middle of a longer value
	// is skipped unread.
	maxRawRefs  = 64 << 10
	rawRefsHead = 4 << 10
)

// messageID returns the original's Message-ID without angle brackets, or
// "" when it has none that is well formed.
func (h header) messageID() string {
	raw := h.first("Message-Id")
	if len(raw) > maxRawRefs {
		raw = raw[:maxRawRefs]
	}
	if ids := msgIDs(raw); len(ids) > 0 {
		return ids[0]
	}
	return ""
}

// references returns the identifiers for the reply's References: the
// original's References (or, without them, its In-Reply-To) followed by
// its Message-ID msgID, as RFC 5322 section 3.6.4 describes. When that is
// too long it keeps the first identifier (the start of the thread) and as
// many of the last ones as fit, as the same section suggests for trimming.
func references(h header, msgID string) []string {
	raw := h.first("References")
	if strings.TrimSpace(raw) == "" {
		raw = h.first("In-Reply-To")
	}
	if len(raw) > maxRawRefs {
		// A cut identifier is dropped as malformed, never half-kept.
		raw = raw[:rawRefsHead] + " " + raw[len(raw)-(maxRawRefs-rawRefsHead):]
	}
	seen := map[string]bool{msgID: true}
	var ids []string
	for _, id := range msgIDs(raw) {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	ids = append(ids, msgID)

	size := 0
	for _, id := range ids {
		size += len(id) + 3 // "<", ">" and a blank
	}
	if len(ids) <= maxRefs && size <= maxRefsLen {
		return ids
	}
	size = len(ids[0]) + 3
	k := 0 // identifiers kept from the end
	for i := len(ids) - 1; i >= 1 && k < maxRefs-1; i-- {
		if size+len(ids[i])+3 > maxRefsLen {
			break
		}
		size += len(ids[i]) + 3
		k++
	}
	return append([]string{ids[0]}, ids[len(ids)-k:]...)
}

// msgIDs returns the well-formed identifiers in a msg-id list, without
// their angle brackets, skipping anything else (comments, junk, malformed
// identifiers).
func msgIDs(s string) []string {
	var ids []string
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			return ids
		}
		s = s[i+1:]
		j := strings.IndexByte(s, '>')
		if j < 0 {
			return ids
		}
		id := s[:j]
		if k := strings.LastIndexByte(id, '<'); k >= 0 {
			id = id[k+1:]
		}
		s = s[j+1:]
		if validMsgID(id) {
			ids = append(ids, id)
		}
	}
}

// validMsgID reports whether id is an RFC 5322 section 3.6.4 msg-id
// without its brackets: dot-atom-text "@" (dot-atom-text or
// no-fold-literal), in ASCII, and at most maxMsgID octets. Anything
// looser (blanks, quotes, a second "@") is dropped rather than repaired.
func validMsgID(id string) bool {
	if len(id) == 0 || len(id) > maxMsgID {
		return false
	}
	at := strings.IndexByte(id, '@')
	if at <= 0 || at == len(id)-1 {
		return false
	}
	left, right := id[:at], id[at+1:]
	for i := 0; i < len(left); i++ {
		if !isAtext(left[i]) {
			return false
		}
	}
	if len(right) >= 2 && right[0] == '[' && right[len(right)-1] == ']' {
		for i := 1; i < len(right)-1; i++ {
			if c := right[i]; c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '\\' {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(right); i++ {
		if !isAtext(right[i]) {
			return false
		}
	}
	return true
}

// isAtext reports whether c is RFC 5322 atext or ".".
func isAtext(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	return !strings.ContainsRune(`()<>[]:;@\,"`, rune(c))
}
