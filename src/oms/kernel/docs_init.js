// Starts Swagger UI on the page's OpenAPI document (kept out of the HTML: no inline script).
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({ url: root.dataset.openapi, dom_id: "#swagger-ui" });
