// Tool-call output read incrementally (the server streams a forced call's arguments as they are
// written): at every cut of a body, what readPartialCall gives, compacted, is a prefix of the whole
// call's arguments, and parseToolCalls gives those same arguments.
import { compactJson, parseToolCalls, readPartialCall, TOOL_CALL_CLOSE, TOOL_CALL_OPEN } from '@kiln/chat';

const body = '{\n  "name": "get_weather",\n  "arguments": {\n    "location": "Tel \\"Aviv\\" \\\\ é",\n    "days": 3,\n    "tags": [ "a b", "c" ],\n    "nested": { "x": null }\n  }\n}';

describe('reading a tool call as it is written', () => {
  it('every cut gives a prefix of the final compact arguments, the name once complete', () => {
    const whole = compactJson(readPartialCall(body).arguments);
    expect(whole).toBe('{"location":"Tel \\"Aviv\\" \\\\ é","days":3,"tags":["a b","c"],"nested":{"x":null}}');
    expect(JSON.parse(whole)).toEqual(JSON.parse(body).arguments);
    const nameEnds = body.indexOf('"get_weather"') + '"get_weather"'.length;
    for (let cut = 0; cut <= body.length; cut++) {
      const partial = readPartialCall(body.slice(0, cut));
      expect(whole.startsWith(compactJson(partial.arguments))).toBe(true);
      expect(partial.name).toBe(cut >= nameEnds ? 'get_weather' : undefined);
      expect(partial.argumentsComplete).toBe(cut >= body.lastIndexOf('}', body.length - 2) + 1);
    }
  });

  it('parseToolCalls gives the same compact arguments', () => {
    const { calls, content } = parseToolCalls(`${TOOL_CALL_OPEN}\n${body}\n${TOOL_CALL_CLOSE}`, () => 'call_1');
    expect(content).toBe('');
    expect(calls).toEqual([{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: compactJson(readPartialCall(body).arguments) } }]);
  });
});
