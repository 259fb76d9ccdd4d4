using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;

namespace OrleansPush.Gateway.Tests;

[Collection(GatewayCollection.Name)]
public sealed class AdminTests(GatewayFixture fixture)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(15);

    private TestGateway Gateway => fixture.Gateway;

    [Fact]
    public async Task AdminConnectionsListsAConnectedClientAndItsUser()
    {
        var user = "adm" + Guid.NewGuid().ToString("N")[..10];
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + user));
        await client.SubscribeAsync(GatewayFixture.NewTopic("admin"));

        var answer = await GetJsonAsync(Gateway, "/api/admin/connections");
        Assert.True(answer.GetProperty("count").GetInt32() >= 1);
        Assert.True(answer.GetProperty("byTransport").GetProperty("ws").GetInt32() >= 1);
        var users = answer.GetProperty("users").EnumerateArray().ToList();
        Assert.Contains(users, u => u.GetProperty("userId").GetString() == user && u.GetProperty("connections").GetInt32() == 1);
    }

    [Fact]
    public async Task AdminTopicShowsPositionGatewaysAndPresence()
    {
        var topic = "room:" + Guid.NewGuid().ToString("N");
        var user = "adm" + Guid.NewGuid().ToString("N")[..10];
        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri("user=" + user));
        await client.SubscribeAsync(topic);
        await Gateway.PublishAsync(topic, "{\"a\":1}");
        await Gateway.PublishAsync(topic, "{\"a\":2}");

        var answer = await GetJsonAsync(Gateway, "/api/admin/topics/" + topic);
        Assert.Equal(2, answer.GetProperty("position").GetProperty("seq").GetInt64());
        Assert.Single(answer.GetProperty("gateways").EnumerateArray());
        Assert.Contains(answer.GetProperty("presence").GetProperty("users").EnumerateArray(), u => u.GetProperty("userId").GetString() == user);

        using var bad = await Gateway.Http.GetAsync("/api/admin/topics/bad%20topic");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
    }

    [Fact]
    public async Task DisconnectClosesAUsersConnectionsOnTwoGatewaysAndLeavesOthersAlone()
    {
        await using var silo = await TestSilo.StartAsync();
        await using var a = await TestGateway.StartClientAsync(silo);
        await using var b = await TestGateway.StartClientAsync(silo);
        var user = "bye" + Guid.NewGuid().ToString("N")[..10];
        var other = "stay" + Guid.NewGuid().ToString("N")[..10];
        await using var onA = await WsClient.ConnectAsync(a.WebSocketUri("user=" + user));
        await using var onB = await WsClient.ConnectAsync(b.WebSocketUri("user=" + user));
        await using var bystander = await WsClient.ConnectAsync(b.WebSocketUri("user=" + other));
        var topic = GatewayFixture.NewTopic("bye");
        await onA.SubscribeAsync(topic);
        await onB.SubscribeAsync(topic);
        await bystander.SubscribeAsync(topic);

        using var cts = new CancellationTokenSource(Wait);
        using var response = await a.Http.PostAsync($"/api/admin/users/{user}/disconnect", null, cts.Token);
        response.EnsureSuccessStatusCode();
        var answer = await response.Content.ReadFromJsonAsync<JsonElement>(cts.Token);
        Assert.Equal(1, answer.GetProperty("closedHere").GetInt32());

        foreach (var client in new[] { onA, onB })
        {
            var frames = await client.ReadToEndAsync(Wait);
            Assert.Contains(frames, f => f.Code == "disconnected");
        }

        await a.PublishAsync(topic, "{\"still\":true}");
        Assert.Equal("{\"still\":true}", (await bystander.MessagesAsync(1)).Single().RawData);
    }

    private static async Task<JsonElement> GetJsonAsync(TestGateway gateway, string path)
    {
        using var cts = new CancellationTokenSource(Wait);
        using var response = await gateway.Http.GetAsync(path, cts.Token);
        Assert.True(response.IsSuccessStatusCode, $"{path} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cts.Token)}");
        return await response.Content.ReadFromJsonAsync<JsonElement>(cts.Token);
    }
}

[Collection(SecurityCollection.Name)]
public sealed class AdminSecurityTests(SecurityFixture fixture)
{
    [Fact]
    public async Task AdminApiNeedsTheAdminClaimAndAuditsEveryCall()
    {
        var user = SecurityFixture.NewUser();
        Assert.Equal(HttpStatusCode.Unauthorized, await StatusAsync(null));
        Assert.Equal(HttpStatusCode.Forbidden, await StatusAsync(fixture.Token(user)));
        Assert.Equal(HttpStatusCode.OK, await StatusAsync(fixture.Token(user, admin: true)));

        Assert.Contains(fixture.Logs.Lines, l => l.StartsWith("OrleansPush.Audit|2308|", StringComparison.Ordinal) && l.Contains(user, StringComparison.Ordinal));
        Assert.Contains(fixture.Logs.Lines, l => l.StartsWith("OrleansPush.Audit|2307|", StringComparison.Ordinal) && l.Contains(user, StringComparison.Ordinal)
            && l.Contains("/api/admin/connections", StringComparison.Ordinal));
    }

    private async Task<HttpStatusCode> StatusAsync(string? token)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/api/admin/connections");
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        using var response = await fixture.Gateway.Http.SendAsync(request, cts.Token);
        return response.StatusCode;
    }
}
