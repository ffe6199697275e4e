package policy

import (
	"encoding/json"
	"math/bits"
)

// Reason names one rule that fired. The names are a contract (DESIGN.md):
// `replygate check --json`, the log and the trace header all spell them so.
type Reason string

// Reasons for suppressing an automatic reply (inbound judgement).
const (
	ReasonXAllowAutoReply       Reason = "x-allow-auto-reply"
	ReasonAutoSubmitted         Reason = "auto-submitted"
	ReasonListHeader            Reason = "list-header"
	ReasonPrecedence            Reason = "precedence"
	ReasonXAutoResponseSuppress Reason = "x-auto-response-suppress"
	ReasonNullSender            Reason = "null-sender"
	ReasonSystemSender          Reason = "system-sender"
	ReasonReport                Reason = "report"
	ReasonNotAddressed          Reason = "not-addressed"
	ReasonSpam                  Reason = "spam"
	ReasonBulkHeuristic         Reason = "bulk-heuristic"
	ReasonProductHeader         Reason = "product-header"
	ReasonHeaderLimit           Reason = "header-limit"
	ReasonMachineSender         Reason = "machine-sender"
	ReasonMachineLogin          Reason = "machine-login"
	ReasonMachineClient         Reason = "machine-client"
	ReasonOptIn                 Reason = "opt-in"
)

// reasonOrder is the canonical order of every reason; a ReasonSet bit is an
// index into it, so sets list their members in this order.
var reasonOrder = [...]Reason{
	ReasonXAllowAutoReply,
	ReasonAutoSubmitted,
	ReasonListHeader,
	ReasonPrecedence,
	ReasonXAutoResponseSuppress,
	ReasonNullSender,
	ReasonSystemSender,
	ReasonReport,
	ReasonNotAddressed,
	ReasonSpam,
	ReasonBulkHeuristic,
	ReasonProductHeader,
	ReasonHeaderLimit,
	ReasonOptIn,
	ReasonMachineSender,
	ReasonMachineLogin,
	ReasonMachineClient,
}

// KnownReasons returns every reason name in canonical order.
func KnownReasons() []Reason { return append([]Reason(nil), reasonOrder[:]...) }

func bit(r Reason) ReasonSet {
	for i, o := range reasonOrder {
		if o == r {
			return 1 << i
		}
	}
	panic("policy: unknown reason " + string(r))
}

// Bits of each reason, computed once so the classifier never searches.
var (
	bitXAllowAutoReply       = bit(ReasonXAllowAutoReply)
	bitAutoSubmitted         = bit(ReasonAutoSubmitted)
	bitListHeader            = bit(ReasonListHeader)
	bitPrecedence            = bit(ReasonPrecedence)
	bitXAutoResponseSuppress = bit(ReasonXAutoResponseSuppress)
	bitNullSender            = bit(ReasonNullSender)
	bitSystemSender          = bit(ReasonSystemSender)
	bitReport                = bit(ReasonReport)
	bitNotAddressed          = bit(ReasonNotAddressed)
	bitSpam                  = bit(ReasonSpam)
	bitBulkHeuristic         = bit(ReasonBulkHeuristic)
	bitProductHeader         = bit(ReasonProductHeader)
	bitHeaderLimit           = bit(ReasonHeaderLimit)
	bitOptIn                 = bit(ReasonOptIn)
	bitMachineSender         = bit(ReasonMachineSender)
	bitMachineLogin          = bit(ReasonMachineLogin)
	bitMachineClient         = bit(ReasonMachineClient)
)

// machineOrigin is the subset of inbound reasons that also prove, on
// outbound mail, that a machine wrote the message: a message that declares
// itself automatic (RFC 3834), list traffic, bounces and reports, and the
// product headers of trackers and CI. X-Allow-Auto-Reply alone does not (a
// person may set it), nor do spam and bulk flags, nor addressing.
var machineOrigin = bitAutoSubmitted | bitListHeader | bitPrecedence | bitXAutoResponseSuppress |
	bitNullSender | bitSystemSender | bitReport | bitProductHeader

// ReasonSet is a set of reasons as a bit mask: building a verdict allocates
// nothing, and the set lists itself in canonical order.
type ReasonSet uint32

// Has reports whether r is in the set.
func (s ReasonSet) Has(r Reason) bool { return s&bit(r) != 0 }

// Len returns the number of reasons in the set.
func (s ReasonSet) Len() int { return bits.OnesCount32(uint32(s)) }

// List returns the reasons in canonical order; never nil, so JSON shows [].
func (s ReasonSet) List() []Reason {
	out := make([]Reason, 0, s.Len())
	for i, r := range reasonOrder {
		if s&(1<<i) != 0 {
			out = append(out, r)
		}
	}
	return out
}

// Strings returns the reason names, for logging.
func (s ReasonSet) Strings() []string {
	out := make([]string, 0, s.Len())
	for _, r := range s.List() {
		out = append(out, string(r))
	}
	return out
}

func (s ReasonSet) MarshalJSON() ([]byte, error) { return json.Marshal(s.List()) }
