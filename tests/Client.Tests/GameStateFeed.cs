using System.Globalization;
using System.Text;

namespace OrleansPush.Client.Tests;

/// <summary>A state-like topic's payloads: a game state of about 2 KB of JSON (a match, eight players, a few objectives)
/// in which each step moves a few players and now and then changes a score, a health or an objective, as a game server
/// publishing its state at a fixed tick rate does. Seeded: the same seed gives the same sequence.</summary>
internal sealed class GameStateFeed(int seed)
{
    private const int Players = 8;
    private const int Objectives = 4;
    private static readonly string[] Names = ["ada", "brook", "cyrus", "dana", "emil", "freya", "gus", "hana"];
    private static readonly string[] Weapons = ["rifle", "shotgun", "bow", "staff"];

    private readonly Random _random = new(seed);
    private readonly double[] _x = new double[Players];
    private readonly double[] _y = new double[Players];
    private readonly int[] _hp = new int[Players];
    private readonly int[] _score = new int[Players];
    private readonly int[] _weapon = new int[Players];
    private readonly int[] _ammo = new int[Players];
    private readonly string[] _owner = ["none", "none", "none", "none"];
    private long _tick = 1_000;
    private bool _started;

    /// <summary>The next state, UTF-8 JSON; the first call gives the initial state.</summary>
    public byte[] Next()
    {
        if (!_started)
        {
            _started = true;
            for (var p = 0; p < Players; p++)
            {
                _x[p] = Math.Round(_random.NextDouble() * 1000, 2);
                _y[p] = Math.Round(_random.NextDouble() * 1000, 2);
                _hp[p] = 100;
                _weapon[p] = _random.Next(Weapons.Length);
                _ammo[p] = 30;
            }
        }
        else
        {
            Step();
        }

        return Encoding.UTF8.GetBytes(Render());
    }

    private void Step()
    {
        _tick++;
        for (var moves = _random.Next(1, 4); moves > 0; moves--)
        {
            var p = _random.Next(Players);
            _x[p] = Math.Round(Math.Clamp(_x[p] + (_random.NextDouble() * 20) - 10, 0, 1000), 2);
            _y[p] = Math.Round(Math.Clamp(_y[p] + (_random.NextDouble() * 20) - 10, 0, 1000), 2);
        }

        var shooter = _random.Next(Players);
        _ammo[shooter] = _ammo[shooter] == 0 ? 30 : _ammo[shooter] - 1;

        switch (_random.Next(6))
        {
            case 0:
                _hp[_random.Next(Players)] = _random.Next(0, 101);
                break;
            case 1:
                _score[_random.Next(Players)] += _random.Next(1, 50);
                break;
            case 2:
                _owner[_random.Next(Objectives)] = Names[_random.Next(Players)];
                break;
            case 3:
                _weapon[_random.Next(Players)] = _random.Next(Weapons.Length);
                break;
        }
    }

    private string Render()
    {
        var json = new StringBuilder(2400);
        var c = CultureInfo.InvariantCulture;
        json.Append(c, $"{{\"match\":{{\"id\":\"m-7f3a9c\",\"map\":\"harbor\",\"mode\":\"capture\",\"tick\":{_tick},\"round\":3,\"timeLeft\":{600 - (_tick % 600)}}},\"players\":[");
        for (var p = 0; p < Players; p++)
        {
            json.Append(c, $"{(p == 0 ? "" : ",")}{{\"id\":\"p{p + 1}\",\"name\":\"{Names[p]}\",\"team\":\"{(p % 2 == 0 ? "red" : "blue")}\",\"pos\":{{\"x\":{_x[p]},\"y\":{_y[p]}}},");
            json.Append(c, $"\"hp\":{_hp[p]},\"armor\":{_hp[p] / 2},\"score\":{_score[p]},\"kills\":{_score[p] / 10},\"deaths\":{(p * 3) % 7},");
            json.Append(c, $"\"weapon\":\"{Weapons[_weapon[p]]}\",\"ammo\":{_ammo[p]},\"alive\":{(_hp[p] > 0 ? "true" : "false")},\"ping\":{40 + (p * 7)}}}");
        }

        json.Append("],\"objectives\":[");
        for (var o = 0; o < Objectives; o++)
        {
            json.Append(c, $"{(o == 0 ? "" : ",")}{{\"id\":\"obj-{o}\",\"kind\":\"flag\",\"owner\":\"{_owner[o]}\",\"at\":{{\"x\":{(o * 250) + 125},\"y\":500}}}}");
        }

        json.Append("],\"rules\":{\"scoreLimit\":500,\"friendlyFire\":false,\"respawnSeconds\":5,\"region\":\"eu-west\"}");
        json.Append(",\"chat\":{\"last\":\"gg, well played everyone\",\"from\":\"system\"}}");
        return json.ToString();
    }
}
