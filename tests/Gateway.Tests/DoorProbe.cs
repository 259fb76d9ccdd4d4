using System.Net;
using System.Net.WebSockets;
using MQTTnet;
using MQTTnet.Exceptions;

namespace OrleansPush.Gateway.Tests;

/// <summary>What a client sees at the door: the HTTP status of a raw WebSocket handshake, the CONNACK code of an MQTT
/// connect.</summary>
internal static class DoorProbe
{
    /// <summary>Opens a raw-protocol socket and closes it again; the handshake's HTTP status.</summary>
    public static async Task<HttpStatusCode> WebSocketStatusAsync(Uri uri, string? cookie = null)
    {
        using var socket = new ClientWebSocket();
        if (cookie is not null)
        {
            socket.Options.SetRequestHeader("Cookie", cookie);
        }

        socket.Options.AddSubProtocol("orleanspush.v1.json");
        socket.Options.CollectHttpResponseDetails = true;
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        try
        {
            await socket.ConnectAsync(uri, cts.Token);
            await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, cts.Token);
        }
        catch (WebSocketException)
        {
        }

        return socket.HttpStatusCode;
    }

    /// <summary>Connects; the CONNACK's code, whether the connect succeeded or was refused.</summary>
    public static async Task<MqttClientConnectResultCode?> MqttConnectCodeAsync(IMqttClient client, MqttClientOptionsBuilder options)
    {
        using var cts = new CancellationTokenSource(WsClient.DefaultWait);
        try
        {
            return (await client.ConnectAsync(options.Build(), cts.Token)).ResultCode;
        }
        catch (MqttCommunicationException)
        {
            // MQTTnet 5 returns a refusing CONNACK as the result and throws only when none came.
            return null;
        }
    }
}
