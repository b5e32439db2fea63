// Scenario "hello": constant text.
export default {
  fetch() {
    return new Response("Hello, world!\n");
  },
};
