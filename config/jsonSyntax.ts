// Locates the first syntax error in a JSON text. JSON.parse's messages on Node 20 name a
// position only for some errors ("Unexpected token '}', ... is not valid JSON" names none), and
// an operator fixing a config needs a line and column, so the position is found here.
// Iterative, so a deeply nested text cannot overflow the stack.

export interface JsonSyntaxError {
  line: number;
  column: number;
  message: string;
}

type State = 'value' | 'valueOrClose' | 'key' | 'keyOrClose' | 'afterValue';

const numberRe = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const escapes = '"\\/bfnrtu';

function scanString(text: string, start: number): { end: number } | { at: number; message: string } {
  let i = start + 1;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === 0x22) return { end: i + 1 };
    if (c < 0x20) return { at: i, message: 'control character in a string (write it as an escape such as \\n)' };
    if (c === 0x5c) {
      const e = text[i + 1] ?? '';
      if (!escapes.includes(e) || e === '') return { at: i, message: 'invalid escape in a string' };
      if (e === 'u' && !/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
        return { at: i, message: 'invalid \\u escape in a string (needs four hex digits)' };
      }
      i += e === 'u' ? 6 : 2;
    } else {
      i += 1;
    }
  }
  return { at: text.length, message: 'unterminated string' };
}

function offsetOfError(text: string): { at: number; message: string } | undefined {
  const stack: ('{' | '[')[] = [];
  let state: State = 'value';
  let i = 0;
  const seen = () => (i >= text.length ? 'unexpected end of input' : `unexpected ${JSON.stringify(text[i])}`);
  for (;;) {
    while (i < text.length && ' \t\n\r'.includes(text[i] as string)) i += 1;
    const c = text[i];
    if (state === 'valueOrClose' && c === ']') {
      stack.pop();
      i += 1;
      state = 'afterValue';
    } else if (state === 'value' || state === 'valueOrClose') {
      if (c === '{' || c === '[') {
        stack.push(c);
        i += 1;
        state = c === '{' ? 'keyOrClose' : 'valueOrClose';
        continue;
      }
      if (c === '"') {
        const r = scanString(text, i);
        if ('at' in r) return r;
        i = r.end;
      } else if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) {
        numberRe.lastIndex = i;
        if (!numberRe.test(text)) return { at: i, message: 'invalid number' };
        i = numberRe.lastIndex;
      } else {
        const literal = ['true', 'false', 'null'].find((l) => text.startsWith(l, i));
        if (!literal) return { at: i, message: `${seen()}; expected a value` };
        i += literal.length;
      }
      state = 'afterValue';
    } else if (state === 'key' || state === 'keyOrClose') {
      if (state === 'keyOrClose' && c === '}') {
        stack.pop();
        i += 1;
        state = 'afterValue';
        continue;
      }
      if (c !== '"') return { at: i, message: `${seen()}; expected a property name in double quotes` };
      const r = scanString(text, i);
      if ('at' in r) return r;
      i = r.end;
      while (i < text.length && ' \t\n\r'.includes(text[i] as string)) i += 1;
      if (text[i] !== ':') return { at: i, message: `${seen()}; expected ':' after the property name` };
      i += 1;
      state = 'value';
    } else {
      const top = stack[stack.length - 1];
      if (top === undefined) return i < text.length ? { at: i, message: `${seen()} after the end of the JSON value` } : undefined;
      const close = top === '{' ? '}' : ']';
      if (c === ',') state = top === '{' ? 'key' : 'value';
      else if (c === close) stack.pop();
      else return { at: i, message: `${seen()}; expected ',' or '${close}'` };
      i += 1;
    }
  }
}

/** The first syntax error of `text` with its 1-based line and column, or undefined if it is valid JSON. */
export function findJsonSyntaxError(text: string): JsonSyntaxError | undefined {
  const error = offsetOfError(text);
  if (!error) return undefined;
  const before = text.slice(0, error.at);
  const line = before.split('\n').length;
  const column = error.at - (before.lastIndexOf('\n') + 1) + 1;
  return { line, column, message: error.message };
}
