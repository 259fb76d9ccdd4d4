using System.Net;
using System.Text.Json;

namespace OrleansPush.Gateway.Tests;

[Collection(GatewayCollection.Name)]
public sealed class PresenceTests(GatewayFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    [Fact]
    public async Task PresenceListsSubscribedUsersWithConnectionCountsAndAnnouncesJoinsAndLeaves()
    {
        var topic = "room:" + Guid.NewGuid().ToString("N");
        var alice = "alice" + Guid.NewGuid().ToString("N")[..6];
        var bob = "bob" + Guid.NewGuid().ToString("N")[..6];
        await using var watcher = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + alice));
        Assert.Equal("ok", (await watcher.RequestAsync("sub", new { topic, presence = true })).Op);
        var aliceJoin = await watcher.NextAsync();
        Assert.Equal("join", aliceJoin.Op);
        Assert.Equal(alice, aliceJoin.Json.GetProperty("user").GetString());

        await using var alice2 = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + alice));
        await alice2.SubscribeAsync(topic);
        var bobClient = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + bob));
        await bobClient.SubscribeAsync(topic);
        await using var anonymous = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await anonymous.SubscribeAsync(topic);

        var bobJoin = await watcher.NextAsync();
        Assert.Equal(("join", bob), (bobJoin.Op, bobJoin.Json.GetProperty("user").GetString()));

        var presence = await PresenceAsync(topic, users => users.Count == 2);
        Assert.Equal(2, presence.Users[alice]);
        Assert.Equal(1, presence.Users[bob]);
        Assert.Equal(1, presence.Anonymous);

        // Bob's only connection goes: he leaves; alice's second connection going is no leave (she is still there).
        await bobClient.DisposeAsync();
        var bobLeave = await watcher.NextAsync();
        Assert.Equal(("leave", bob), (bobLeave.Op, bobLeave.Json.GetProperty("user").GetString()));
        await alice2.DisposeAsync();
        presence = await PresenceAsync(topic, users => users.GetValueOrDefault(alice) == 1 && !users.ContainsKey(bob));
        Assert.Equal(1, presence.Users[alice]);
        Assert.True(await watcher.IsQuietAsync(TimeSpan.FromMilliseconds(300)));
    }

    [Fact]
    public async Task PresenceOfANamespaceWithoutItIsNotFound()
    {
        using var response = await Gateway.Http.GetAsync($"/api/topics/news-{Guid.NewGuid():N}/presence");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }

    /// <summary>Presence reports travel to the grain asynchronously: poll until <paramref name="ready"/> holds.</summary>
    private async Task<(Dictionary<string, int> Users, int Anonymous)> PresenceAsync(string topic, Func<Dictionary<string, int>, bool> ready)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            var json = JsonDocument.Parse(await Gateway.Http.GetStringAsync($"/api/topics/{topic}/presence")).RootElement;
            var users = json.GetProperty("users").EnumerateArray()
                .ToDictionary(u => u.GetProperty("userId").GetString()!, u => u.GetProperty("connections").GetInt32());
            if (ready(users) || DateTime.UtcNow > deadline)
            {
                return (users, json.GetProperty("anonymousConnections").GetInt32());
            }

            await Task.Delay(100);
        }
    }
}
