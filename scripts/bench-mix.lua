-- The mixed read workload of `scripts/bench --mixed` (issue 13), for wrk:
--   70 % detail pages        /properties/{id}/
--   20 % list pages          /properties/?page=1..50
--    5 % API list pages      /api/properties/?page=1..50
--    5 % API detail pages    /api/properties/{id}/
-- Popular items more often: the i-th of n (ids in seed order, pages in order) with
-- i = floor(n * r^2), r uniform in [0, 1). BENCH_IDS names a file of the real ids, one a
-- line. Each wrk thread draws a fixed, seeded sequence of requests up front (so two
-- binaries get the same URLs in the same order) and cycles through it.
-- BENCH_SEARCH_PERCENT (default 0) replaces that share of the list pages by free-text
-- searches /properties/?q=TERM: 80 % a term from the seed's words, popular ones more
-- often, 20 % a term nobody searched before (their hit ratio: see BENCHMARKS.md, from
-- the access log).

local threads = 0

function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
end

local requests = {}
local n = 0
local i = 0
local search_percent = tonumber(os.getenv("BENCH_SEARCH_PERCENT") or "0")
local terms = {
    "loft", "austin", "condo", "boston", "garden", "seattle", "cottage", "miami",
    "penthouse", "denver", "townhouse", "portland", "victorian", "chicago", "bungalow",
    "brooklyn", "studio", "nashville", "duplex", "raleigh", "farmhouse", "phoenix",
    "ranch", "boise", "craftsman", "savannah", "family", "santa fe", "view", "porch",
}

function init(args)
    local ids = {}
    for line in io.lines(os.getenv("BENCH_IDS")) do
        ids[#ids + 1] = line
    end
    local pages = math.max(1, math.ceil(#ids / 20))
    local function skewed(count)
        local r = math.random()
        return math.floor(count * r * r) + 1
    end
    math.randomseed(4242 + (tid or 0))
    for k = 1, 50000 do
        local u = math.random() * 100
        local path
        if u < 70 then
            path = "/properties/" .. ids[skewed(#ids)] .. "/"
        elseif u < 70 + search_percent then
            if math.random() < 0.8 then
                path = "/properties/?q=" .. terms[skewed(#terms)]:gsub(" ", "+")
            else
                path = false -- made at request time: never the same twice
            end
        elseif u < 90 then
            path = "/properties/?page=" .. skewed(pages)
        elseif u < 95 then
            path = "/api/properties/?page=" .. skewed(pages)
        else
            path = "/api/properties/" .. ids[skewed(#ids)] .. "/"
        end
        requests[k] = path and wrk.format("GET", path)
    end
    n = #requests
end

local fresh = 0

function request()
    i = i % n + 1
    local r = requests[i]
    if r then
        return r
    end
    fresh = fresh + 1
    return wrk.format("GET", "/properties/?q=new" .. tid .. "x" .. fresh)
end

