// Package milter is the glue between an MTA (Postfix, Sendmail) and the
// policy package, on github.com/emersion/go-milter v0.5.0.
//
// For each message it collects the envelope, the connection data and the
// header fields, asks policy for a verdict, adds the stamp, logs one line,
// and offers mail that may be answered to a Responder. It holds no mail
// rules of its own.
//
// go-milter v0.5.0 has sharp edges (../shared/recipes/) that this package
// works around: it runs one go-milter Server per connection so connection
// data survives the backend swap after each message; it wraps every
// connection with read buffering, idle deadlines and TCP_QUICKACK; it
// bounds live sessions and answers beyond the bound per the fail action;
// its own accept loop retries temporary errors; Shutdown drains; every
// callback whose reply was negotiated away returns nil; and header events
// are read by the connection wrapper before go-milter sees them, so a NUL
// in a value, a field over 1 MiB or 10,000 fields get a verdict instead
// of a stray reply, a dropped session or an unbounded map (conn.go).
package milter
