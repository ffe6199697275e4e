-- miltertest script: drives replygate through three transactions on one
-- milter connection, as an MTA would, and checks what it asks to change.
--
--   1. a robot's mail submitted on the ORIGINATING daemon: replygate adds
--      "X-Allow-Auto-Reply: no" and "Auto-Submitted: auto-generated" and
--      accepts at end of message;
--   2. a person's mail after SASL login: nothing is added, accepted;
--   3. a robot's mail after a SASL login listed in machine_logins: stamped.
--
-- Replies are read only for the steps whose reply replygate negotiated
-- (SMFIP_NR_* unset), and steps are sent only when not negotiated away
-- (SMFIP_NO*). miltertest has no macros for end of message (only
-- SMFIC_CONNECT, HELO, MAIL and RCPT), so the queue id goes with MAIL.
--
-- Run: miltertest -D port=PORT -s replygate.lua
--      (-D invert=1 flips every stamp expectation, to show it can fail;
--       replygate's config needs machine_senders = ["jenkins@example.test"]
--       and machine_logins = ["ci-bot"])
local sock = "inet:" .. (port or "8894") .. "@127.0.0.1"
local invert = invert == "1"
local conn -- set by main

-- miltertest exits 1 on error() without printing the message; main runs
-- under pcall at the bottom, which prints it.
local function fail(msg)
	error(msg, 0)
end

local function check(what, err)
	if err ~= nil then
		fail(what .. ": " .. tostring(err))
	end
end

-- step sends one event (send returns an error or nil) and, when replygate
-- negotiated a reply for it, reads the reply and wants "continue".
local function step(what, no_flag, nr_flag, send)
	if no_flag ~= nil and mt.test_option(conn, no_flag) then
		return -- negotiated away: not sent
	end
	check(what, send())
	if nr_flag ~= nil and mt.test_option(conn, nr_flag) then
		return -- sent, but replygate gives no reply
	end
	local got = mt.getreply(conn)
	if got ~= SMFIR_CONTINUE then
		fail(string.format("%s: reply %q, want continue", what, string.char(got)))
	end
end

-- transaction sends one message and checks the end-of-message actions.
local function transaction(name, macros, from, stamp)
	if invert then
		stamp = not stamp
	end
	mt.macro(conn, SMFIC_MAIL, (table.unpack or unpack)(macros))
	step(name .. ": mail", SMFIP_NOMAIL, SMFIP_NR_MAIL, function()
		return mt.mailfrom(conn, "<" .. from .. ">")
	end)
	step(name .. ": rcpt", SMFIP_NORCPT, SMFIP_NR_RCPT, function()
		return mt.rcptto(conn, "<bob@remote.example>")
	end)
	step(name .. ": data", SMFIP_NODATA, SMFIP_NR_DATA, function()
		return mt.data(conn)
	end)
	local fields = {
		{ "From", from },
		{ "To", "Bob <bob@remote.example>" },
		{ "Subject", name },
		{ "Message-ID", "<" .. name .. "@client.example.test>" },
	}
	for _, f in ipairs(fields) do
		step(name .. ": header " .. f[1], SMFIP_NOHDRS, SMFIP_NR_HDR, function()
			return mt.header(conn, f[1], f[2])
		end)
	end
	step(name .. ": eoh", SMFIP_NOEOH, SMFIP_NR_EOH, function()
		return mt.eoh(conn)
	end)
	step(name .. ": body", SMFIP_NOBODY, SMFIP_NR_BODY, function()
		return mt.bodystring(conn, "Hello.\r\n")
	end)

	check(name .. ": eom", mt.eom(conn))
	local got = mt.getreply(conn)
	if got ~= SMFIR_ACCEPT then
		fail(string.format("%s: end-of-message reply %q, want accept", name, string.char(got)))
	end
	for _, f in ipairs({ { "X-Allow-Auto-Reply", "no" }, { "Auto-Submitted", "auto-generated" } }) do
		if stamp and not mt.eom_check(conn, MT_HDRADD, f[1], f[2]) then
			fail(string.format("%s: %s: %s was not added", name, f[1], f[2]))
		end
		if not stamp and mt.eom_check(conn, MT_HDRADD, f[1]) then
			fail(string.format("%s: %s was added (%q), want no stamp", name, f[1], tostring(mt.getheader(conn, f[1], 0))))
		end
	end
	if not stamp and mt.eom_check(conn, MT_HDRADD, "X-Replygate-Verdict") then
		fail(name .. ": X-Replygate-Verdict was added; this test runs without trace_header")
	end
	mt.echo(string.format("ok %s: stamp=%s, accepted", name, tostring(stamp)))
end

local function main()
	conn = mt.connect(sock, 40, 0.25) -- the milter may still be starting
	if conn == nil then
		fail("mt.connect(" .. sock .. ") failed")
	end

	-- nil, nil, nil: offer what libmilter offers (version 6, every action and step).
	check("negotiate", mt.negotiate(conn, nil, nil, nil))
	if not mt.test_action(conn, SMFIF_ADDHDRS) then
		fail("replygate did not ask for SMFIF_ADDHDRS")
	end
	if not mt.test_option(conn, SMFIP_NOBODY) then
		fail("replygate asked for the body; it judges headers only")
	end

	mt.macro(conn, SMFIC_CONNECT, "j", "mta.lab.example.test", "{daemon_name}", "MTA")
	step("connect", SMFIP_NOCONNECT, SMFIP_NR_CONN, function()
		-- an address, not a name: miltertest would resolve a name
		return mt.conninfo(conn, "client.example.test", "192.0.2.10")
	end)
	step("helo", SMFIP_NOHELO, SMFIP_NR_HELO, function()
		return mt.helo(conn, "client.example.test")
	end)

	transaction("robot-originating", { "i", "QID1", "{daemon_name}", "ORIGINATING" }, "jenkins@example.test", true)
	transaction("person-login", { "i", "QID2", "{auth_authen}", "alice" }, "alice@example.test", false)
	transaction("robot-login", { "i", "QID3", "{auth_authen}", "ci-bot" }, "builds@example.test", true)

	mt.disconnect(conn)
end

local ok, err = pcall(main)
if not ok then
	mt.echo("FAIL: " .. tostring(err))
	error(err, 0)
end
mt.echo("PASS")
