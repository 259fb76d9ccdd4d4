using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Tests;

/// <summary>Server-Sent Events as browsers use them, in headless Chromium: a plain <c>EventSource</c> with only
/// <c>onmessage</c> receives pushed messages, and after the gateway ends its stream it reconnects by itself with
/// <c>Last-Event-ID</c> and misses nothing; the browser module's <c>PushEventStream</c> does the same.</summary>
public sealed class BrowserSseTests
{
    [Fact]
    public async Task PlainEventSourceReceivesMessagesAtOnMessageAndResumesWithLastEventId()
    {
        var output = await BrowserTests.RunScriptAsync("sse-eventsource.js", new Dictionary<string, string?>(),
            map: app =>
            {
                var users = app.Services.GetRequiredService<UserConnections>();
                app.MapPost("/test/close", (string user) =>
                {
                    var connections = users.ConnectionsOf(user);
                    foreach (var connection in connections)
                    {
                        connection.Close(WireCodes.Shutdown);
                    }

                    return connections.Length == 0 ? Results.NotFound() : Results.Ok(connections.Length);
                });
            });
        Assert.Contains("OK sse", output, StringComparison.Ordinal);
    }
}
