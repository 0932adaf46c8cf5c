/** Reads rendered markup back with workerd's own HTML parser (HTMLRewriter), not regular expressions. */
export interface Element {
  attributes: Record<string, string>;
  text: string;
}

/** Every element matching each selector, in document order, with its attributes and its text. */
export async function select(html: string, selectors: string[]): Promise<Record<string, Element[]>> {
  const found: Record<string, Element[]> = Object.fromEntries(selectors.map((s) => [s, []]));
  let rewriter = new HTMLRewriter();
  for (const selector of selectors) {
    const list = found[selector]!;
    rewriter = rewriter.on(selector, {
      element(element) {
        list.push({ attributes: Object.fromEntries(element.attributes), text: "" });
      },
      text(chunk) {
        list[list.length - 1]!.text += chunk.text;
      },
    });
  }
  await rewriter.transform(new Response(html)).text();
  return found;
}
