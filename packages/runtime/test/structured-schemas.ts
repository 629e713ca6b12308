// The 50 JSON schemas of the structured-output suite (issue 14): nested objects, arrays with min/max
// items, enums, integer ranges, strings with patterns and formats, required and optional properties,
// $ref and anyOf. Strings are bounded (maxLength, a pattern, an enum or a fixed-length format) so that
// a model sampled at temperature 1 can finish them within the suite's token budget.
type Schema = Record<string, unknown>;

const name = { type: 'string', maxLength: 12 };
const short = { type: 'string', maxLength: 8 };
const age = { type: 'integer', minimum: 0, maximum: 120 };
const color = { enum: ['red', 'green', 'blue'] };

export const SCHEMAS: Array<[string, Schema]> = [
  ['one string', { type: 'object', properties: { name }, required: ['name'] }],
  ['one integer range', { type: 'object', properties: { age }, required: ['age'] }],
  ['boolean', { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] }],
  ['null', { type: 'object', properties: { nothing: { type: 'null' } }, required: ['nothing'] }],
  ['enum of strings', { type: 'object', properties: { color }, required: ['color'] }],
  ['enum of mixed values', { type: 'object', properties: { v: { enum: [1, 'two', true, null] } }, required: ['v'] }],
  ['const', { type: 'object', properties: { kind: { const: 'event' }, n: { type: 'integer', minimum: 1, maximum: 9 } }, required: ['kind', 'n'] }],
  ['two required', { type: 'object', properties: { name, age }, required: ['name', 'age'] }],
  ['optional properties', { type: 'object', properties: { name, nick: short, age }, required: ['name'] }],
  ['all optional', { type: 'object', properties: { a: short, b: { type: 'boolean' } } }],
  ['negative range', { type: 'object', properties: { t: { type: 'integer', minimum: -40, maximum: -1 } }, required: ['t'] }],
  ['exclusive bounds', { type: 'object', properties: { p: { type: 'integer', exclusiveMinimum: 0, exclusiveMaximum: 10 } }, required: ['p'] }],
  ['wide range', { type: 'object', properties: { y: { type: 'integer', minimum: 1900, maximum: 2100 } }, required: ['y'] }],
  ['pattern: lowercase word', { type: 'object', properties: { code: { type: 'string', pattern: '^[a-z]{3,6}$' } }, required: ['code'] }],
  ['pattern: phone', { type: 'object', properties: { phone: { type: 'string', pattern: '^\\+?[0-9]{3}-[0-9]{3}-[0-9]{4}$' } }, required: ['phone'] }],
  ['pattern: zip', { type: 'object', properties: { zip: { type: 'string', pattern: '^[0-9]{5}(-[0-9]{4})?$' } }, required: ['zip'] }],
  ['pattern: hex color', { type: 'object', properties: { hex: { type: 'string', pattern: '^#[0-9a-fA-F]{6}$' } }, required: ['hex'] }],
  ['format: date', { type: 'object', properties: { day: { type: 'string', format: 'date' } }, required: ['day'] }],
  ['format: time', { type: 'object', properties: { at: { type: 'string', format: 'time' } }, required: ['at'] }],
  ['format: date-time', { type: 'object', properties: { when: { type: 'string', format: 'date-time' } }, required: ['when'] }],
  ['format: uuid', { type: 'object', properties: { id: { type: 'string', format: 'uuid' } }, required: ['id'] }],
  ['format in array items', { type: 'object', properties: { ids: { type: 'array', items: { type: 'string', format: 'uuid' }, minItems: 1, maxItems: 2 } }, required: ['ids'] }],
  ['string length range', { type: 'object', properties: { s: { type: 'string', minLength: 2, maxLength: 5 } }, required: ['s'] }],
  ['array of integers, 1 to 3', { type: 'object', properties: { xs: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 99 }, minItems: 1, maxItems: 3 } }, required: ['xs'] }],
  ['array of enums, 2 to 4', { type: 'object', properties: { colors: { type: 'array', items: color, minItems: 2, maxItems: 4 } }, required: ['colors'] }],
  ['array exactly 3', { type: 'object', properties: { rgb: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 255 }, minItems: 3, maxItems: 3 } }, required: ['rgb'] }],
  ['array at most 2 strings', { type: 'object', properties: { tags: { type: 'array', items: short, maxItems: 2 } }, required: ['tags'] }],
  ['top-level array', { type: 'array', items: { type: 'boolean' }, minItems: 1, maxItems: 4 }],
  ['prefixItems tuple', { type: 'object', properties: { pair: { type: 'array', prefixItems: [short, age], items: false } }, required: ['pair'] }],
  ['array of objects', {
    type: 'object',
    properties: { people: { type: 'array', items: { type: 'object', properties: { name, age }, required: ['name', 'age'] }, minItems: 1, maxItems: 2 } },
    required: ['people'],
  }],
  ['nested object', { type: 'object', properties: { user: { type: 'object', properties: { name, age }, required: ['name'] } }, required: ['user'] }],
  ['two levels of nesting', {
    type: 'object',
    properties: { order: { type: 'object', properties: { id: { type: 'integer', minimum: 1, maximum: 999 }, ship: { type: 'object', properties: { zip: { type: 'string', pattern: '^[0-9]{5}$' } }, required: ['zip'] } }, required: ['id', 'ship'] } },
    required: ['order'],
  }],
  ['three levels of nesting', {
    type: 'object',
    properties: { a: { type: 'object', properties: { b: { type: 'object', properties: { c: { type: 'object', properties: { d: { type: 'boolean' } }, required: ['d'] } }, required: ['c'] } }, required: ['b'] } },
    required: ['a'],
  }],
  ['nested arrays', { type: 'object', properties: { grid: { type: 'array', items: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 9 }, minItems: 2, maxItems: 2 }, minItems: 2, maxItems: 2 } }, required: ['grid'] }],
  ['$ref to $defs', { $defs: { person: { type: 'object', properties: { name, age }, required: ['name', 'age'] } }, type: 'object', properties: { owner: { $ref: '#/$defs/person' } }, required: ['owner'] }],
  ['$ref used twice', {
    $defs: { point: { type: 'object', properties: { x: { type: 'integer', minimum: -9, maximum: 9 }, y: { type: 'integer', minimum: -9, maximum: 9 } }, required: ['x', 'y'] } },
    type: 'object',
    properties: { from: { $ref: '#/$defs/point' }, to: { $ref: '#/$defs/point' } },
    required: ['from', 'to'],
  }],
  ['$ref in array items', { definitions: { tag: { type: 'string', pattern: '^[a-z]{2,5}$' } }, type: 'object', properties: { tags: { type: 'array', items: { $ref: '#/definitions/tag' }, minItems: 1, maxItems: 3 } }, required: ['tags'] }],
  ['anyOf of types', { type: 'object', properties: { v: { anyOf: [{ type: 'integer', minimum: 0, maximum: 9 }, { type: 'boolean' }] } }, required: ['v'] }],
  ['anyOf of objects', {
    type: 'object',
    properties: { shape: { anyOf: [
      { type: 'object', properties: { circle: { type: 'integer', minimum: 1, maximum: 50 } }, required: ['circle'] },
      { type: 'object', properties: { square: { type: 'integer', minimum: 1, maximum: 50 } }, required: ['square'] },
    ] } },
    required: ['shape'],
  }],
  ['anyOf with null', { type: 'object', properties: { maybe: { anyOf: [short, { type: 'null' }] } }, required: ['maybe'] }],
  ['type list', { type: 'object', properties: { v: { type: ['boolean', 'null'] } }, required: ['v'] }],
  ['allOf with one schema', { type: 'object', properties: { n: { allOf: [{ type: 'integer', minimum: 5, maximum: 8 }] } }, required: ['n'] }],
  ['titles and descriptions', { title: 'Item', description: 'An item', type: 'object', properties: { sku: { type: 'string', pattern: '^[A-Z]{2}[0-9]{3}$', description: 'stock unit' } }, required: ['sku'] }],
  ['additionalProperties false', { type: 'object', properties: { k: short }, required: ['k'], additionalProperties: false }],
  ['many properties', {
    type: 'object',
    properties: { a: { type: 'boolean' }, b: color, c: { type: 'integer', minimum: 0, maximum: 3 }, d: short, e: { type: 'null' }, f: { enum: ['x', 'y'] } },
    required: ['a', 'b', 'c', 'd', 'e', 'f'],
  }],
  ['event record', {
    type: 'object',
    properties: { id: { type: 'string', format: 'uuid' }, day: { type: 'string', format: 'date' }, level: { enum: ['info', 'warn', 'error'] }, count: { type: 'integer', minimum: 0, maximum: 1000 } },
    required: ['id', 'day', 'level'],
  }],
  ['address', {
    type: 'object',
    properties: { street: name, city: name, zip: { type: 'string', pattern: '^[0-9]{5}$' }, country: { enum: ['US', 'FR', 'DE'] } },
    required: ['city', 'country'],
  }],
  ['function call arguments', {
    type: 'object',
    properties: { location: name, unit: { enum: ['celsius', 'fahrenheit'] }, days: { type: 'integer', minimum: 1, maximum: 7 } },
    required: ['location', 'unit'],
  }],
  ['recursive-free tree', {
    $defs: { leaf: { type: 'object', properties: { value: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['value'] } },
    type: 'object',
    properties: { root: { type: 'object', properties: { left: { $ref: '#/$defs/leaf' }, right: { anyOf: [{ $ref: '#/$defs/leaf' }, { type: 'null' }] } }, required: ['left', 'right'] } },
    required: ['root'],
  }],
  ['empty object allowed', { type: 'object', properties: { note: short } }],
];
