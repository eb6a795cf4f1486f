-- bench/support.lua: the payloads of `make bench`'s B6 (a large list page)
-- and B7 (a large request body) are what the benchmark says they are, and
-- its lookups in the C modules find what they name or say what is missing.
local truto = require "truto"
local support = dofile("bench/support.lua")

describe("bench/support.lua", function()
  it("writes a list page of the given records, about the given size, values distinct per record", function()
    local bytes = 10 * 52428
    local text = support.page_json(10, bytes)
    assert.is_true(#text >= bytes and #text < bytes + 10 * 80 + 64, "page of " .. #text .. " bytes")
    local page = assert(truto.decode_json(text))
    assert.are.equal(10, #page.result)
    assert.are.equal(truto.null, page.next_cursor)
    assert.are.equal("7", page.result[7].id)
    assert.are.equal("value 1 of record 7", page.result[7].remote_data.properties.field_0001)
    assert.are.equal(200, #page.result[7].remote_data.history)
    assert.are.equal("user 3", page.result[7].remote_data.history[3].by)
  end)

  it("builds a request body whose JSON is within 1% of the given size", function()
    local body = support.large_body(1024 * 1024)
    local size = #truto.encode_json(body)
    assert.is_true(math.abs(size - 1024 * 1024) < 1024 * 1024 / 100, "body of " .. size .. " bytes")
    assert.are.equal("item-2", body.line_items[2].id)
    assert.are.equal(2.5, body.line_items[2].price)
  end)

  it("finds a field of the C core, and names one no module has", function()
    assert.are.equal("function", type(support.core_field("now")))
    local ok, err = pcall(support.core_field, "no_such_field")
    assert.is_false(ok)
    assert.matches("bench: no C module of lua%-truto has 'no_such_field'$", err)
  end)

  it("reads the process's peak RSS in kB", function()
    local kb = support.peak_rss_kb()
    assert.are.equal("integer", math.type(kb))
    assert.is_true(kb > 1000 and kb < 4 * 1024 * 1024, kb .. " kB")
  end)
end)
