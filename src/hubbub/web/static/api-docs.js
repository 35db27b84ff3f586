// The interactive page of the server API: Swagger UI over the server's own OpenAPI document.
// Everything it loads comes from this server; the online validator is off.
const root = document.getElementById("api-docs");
window.SwaggerUIBundle({
  url: root.dataset.openapi,
  domNode: root,
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
  persistAuthorization: false,
});
