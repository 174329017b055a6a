-- bench/scale-sessions.lua: wrk script for bench/scale's sessions curve. Every request carries
-- the session cookie of one session drawn at random from N, uniformly or skewed.
--
-- Read from the environment when wrk loads the script (bench/scale sets them):
--   SCALE_COOKIE     cookie name (default sso_sidecar_session)
--   SCALE_DIST       uniform | skewed (default uniform)
--   SCALE_SKEW       exponent k of the skewed draw, index = floor(N * r^k) (default 4)
--   and the ids, one of:
--   SCALE_IDS_FILE   a file with one session id per line (real logins: the memory store), or
--   SCALE_ID_PREFIX + SCALE_N
--                    ids PREFIX .. string.format("%010d", i) for i = 0 .. N-1 (the sessions
--                    bench/scale copied into Redis). Computed per request: nothing to load, so
--                    wrk's per-thread script load (which happens while earlier threads already
--                    send requests) costs the same for 1k and 1M sessions.
--
-- Skewed: r uniform in [0, 1), index = floor(N * r^k): P(index < m) = (m/N)^(1/k). With k = 4
-- the hottest 0.1 % of the sessions get 18 % of the requests, the hottest 1 % get 32 %.

local cookie = os.getenv("SCALE_COOKIE") or "sso_sidecar_session"
local dist = os.getenv("SCALE_DIST") or "uniform"
local skew = tonumber(os.getenv("SCALE_SKEW") or "4")
local ids_file = os.getenv("SCALE_IDS_FILE")
local prefix = os.getenv("SCALE_ID_PREFIX")
local ids, n

if ids_file and ids_file ~= "" then
    ids = {}
    for line in io.lines(ids_file) do
        if #line > 0 then ids[#ids + 1] = line end
    end
    n = #ids
else
    n = tonumber(os.getenv("SCALE_N") or "")
    if not prefix or not n then
        error("bench/scale-sessions.lua: set SCALE_IDS_FILE, or SCALE_ID_PREFIX and SCALE_N")
    end
end
if n < 1 then error("bench/scale-sessions.lua: no session ids") end
if dist ~= "uniform" and dist ~= "skewed" then
    error("bench/scale-sessions.lua: SCALE_DIST must be uniform or skewed, got " .. dist)
end

local floor, random, format = math.floor, math.random, string.format
local head, tail

-- One distinct random seed per wrk thread.
local counter = 0
function setup(thread)
    counter = counter + 1
    thread:set("thread_no", counter)
end

function init(args)
    math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
    -- The request wrk would send with a Cookie header, split around the id.
    local marker = "@@SESSION-ID@@"
    local req = wrk.format(nil, nil, { ["Cookie"] = cookie .. "=" .. marker })
    local i, j = req:find(marker, 1, true)
    head, tail = req:sub(1, i - 1), req:sub(j + 1)
end

function request()
    local r = random()
    if dist == "skewed" then r = r ^ skew end
    local idx = floor(r * n)
    if idx >= n then idx = n - 1 end
    local id
    if ids then id = ids[idx + 1] else id = prefix .. format("%010d", idx) end
    return head .. id .. tail
end
